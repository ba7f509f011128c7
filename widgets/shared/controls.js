// Building blocks of the widgets' controls. Text only ever reaches the page through
// textContent, `title` and attribute values, never as HTML.

/** A new element with a class and attributes (attribute values are text). */
export function el(tag, className = "", attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** An element holding `text` as text. */
export function textEl(tag, className, text, attrs = {}) {
  const node = el(tag, className, attrs);
  node.textContent = text;
  return node;
}

/** A labelled checkbox: { node, box }. */
export function createCheckbox(text, testid, title = "") {
  const node = el("label", "av-check", title ? { title } : {});
  const box = el("input", "", { type: "checkbox", "data-testid": testid });
  node.append(box, textEl("span", "", text));
  return { node, box };
}

/** Give a <select> the options [[value, text]] (only when they changed) and select `value`. */
export function fillSelect(select, options, value) {
  if (Array.from(select.options, (o) => o.value).join("\u0000") !== options.map(([v]) => v).join("\u0000")) {
    select.replaceChildren(...options.map(([v, text]) => textEl("option", "", text, { value: v })));
  }
  if (options.some(([v]) => v === value)) select.value = value;
}

/** Call `submit` when Enter is pressed in a text box (Shift+Enter still types a new line; keys
 * composing a character are left alone). */
export function submitOnEnter(box, submit) {
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
}
