// The notebook's stand-in inside an exported HTML file (attnviz/widgets/export.py): the
// widget's synced traits become a local model with the small part of anywidget's model API the
// widgets use (get, set, on, off, save_changes, send). Binary arrays arrive as {"$bytes":
// base64} and become DataViews, as ipywidgets would deliver them. "__static__" tells a widget
// there is no kernel: it disables what needs one (new prompts, layers) and says so.

/** The state with every {"$bytes": base64} replaced by a DataView over the decoded bytes. */
export function reviveState(value) {
  if (Array.isArray(value)) return value.map(reviveState);
  if (value && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$bytes" && typeof value.$bytes === "string") {
      const bin = atob(value.$bytes);
      const bytes = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      return new DataView(bytes.buffer);
    }
    const out = {};
    for (const k of keys) out[k] = reviveState(value[k]);
    return out;
  }
  return value;
}

/** A model over a plain state object: set() fires "change:<name>" (and "change") like Backbone. */
export function createStaticModel(state) {
  const values = { ...reviveState(state), __static__: true };
  const listeners = new Map();
  const fire = (event, ...args) => {
    for (const cb of [...(listeners.get(event) ?? [])]) cb(...args);
  };
  return {
    get: (name) => values[name],
    set(name, value) {
      if (Object.is(values[name], value)) return;
      values[name] = value;
      fire(`change:${name}`, value);
      fire("change");
    },
    on(event, cb) {
      for (const name of event.split(/\s+/)) {
        if (!listeners.has(name)) listeners.set(name, new Set());
        listeners.get(name).add(cb);
      }
    },
    off(event, cb) {
      for (const name of (event ?? "").split(/\s+/)) {
        if (cb) listeners.get(name)?.delete(cb);
        else listeners.delete(name);
      }
    },
    save_changes() {},
    send() {},
  };
}

/** Render `widget` (an anywidget module's default export) into `el` from exported `state`. */
export function mount(widget, state, el) {
  const model = createStaticModel(state);
  el.replaceChildren();
  widget.render({ model, el });
  return model;
}
