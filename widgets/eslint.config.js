// ESLint (flat config) for the widgets' sources: `npm run lint`, run by `make check`.
import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["node_modules/**"] },
  js.configs.recommended,
  {
    files: ["**/*.js", "**/*.mjs"],
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: { ...globals.browser } },
    rules: {
      "no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrors: "none" }],
      "no-self-compare": "error",
      "eqeqeq": ["error", "always"],
      "prefer-const": "error",
    },
  },
  {
    files: ["**/*.test.js", "build.mjs", "eslint.config.js"],
    languageOptions: { globals: { ...globals.node } },
  },
];
