// Listening to a widget model's trait events.

/** Listen to `handlers` ({event: fn}) on the model; returns a function that stops listening. */
export function listen(model, handlers) {
  for (const [event, handler] of Object.entries(handlers)) model.on(event, handler);
  return () => {
    for (const [event, handler] of Object.entries(handlers)) model.off(event, handler);
  };
}

/**
 * Calls `render` once after the current burst of change events: the kernel sends related traits
 * in one message, which fires one event each.
 */
export function batched(render) {
  let scheduled = false;
  return () => {
    if (scheduled) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      render();
    });
  };
}
