// Requests from a widget to the kernel (attnviz/widgets/requests.py): long jobs with progress,
// cancel and exactly one reply. Trait writes stay for view state; work is asked for here.
//
//   const value = await request(model, "sweep", { alphas }, { onProgress, signal, onStall });
//
// Sent: {kind: "request", id, method, args}; {kind: "cancel", id} when `signal` aborts.
// Received: {kind: "progress", id, done, total, text} (any number), then one of
// {kind: "answer", id, value, buffer_paths} (binary buffers put back at their paths: wire arrays
// decode with decodeArray), {kind: "error", id, message} or {kind: "cancelled", id}.

/** How long a request may go without any message before `onStall` says no kernel answers. */
export const NO_ANSWER_MS = 15_000;

/** The reason a request gave no value: kind "error", "cancelled" or "no-kernel". */
export class RequestError extends Error {
  constructor(kind, message, id = "") {
    super(message);
    this.name = "RequestError";
    this.kind = kind;
    this.id = id;
  }
}

/** Put binary `buffers` back into `value` at `paths` (lists of keys / indices). */
export function restoreBuffers(value, paths = [], buffers = []) {
  paths.forEach((path, i) => {
    if (path.length === 0) {
      value = buffers[i];
      return;
    }
    let node = value;
    for (const key of path.slice(0, -1)) node = node[key];
    node[path[path.length - 1]] = buffers[i];
  });
  return value;
}

const channels = new WeakMap(); // model -> { pending: Map<id, entry>, onMessage }
let counter = 0;

function channelOf(model) {
  let channel = channels.get(model);
  if (channel) return channel;
  const pending = new Map();
  const onMessage = (msg, buffers) => {
    const entry = msg && typeof msg === "object" ? pending.get(msg.id) : undefined;
    if (entry) entry.receive(msg, buffers ?? []);
  };
  channel = { pending, onMessage };
  channels.set(model, channel);
  model.on("msg:custom", onMessage);
  return channel;
}

function release(model, channel, id) {
  channel.pending.delete(id);
  if (channel.pending.size === 0) {
    model.off("msg:custom", channel.onMessage);
    channels.delete(model);
  }
}

/**
 * Ask the kernel to run `method(args)`. Resolves with the answer's value; rejects with a
 * RequestError (kind "error": the kernel's message; "cancelled": the kernel confirmed a cancel;
 * "no-kernel": nothing to send to). `onProgress({done, total, text})` sees each progress
 * message; `onStall(true)` fires when nothing at all came back for `stallMs` (a busy or gone
 * kernel), `onStall(false)` when something then does. Aborting `signal` asks for a cancel.
 */
export function request(model, method, args = {}, { onProgress, signal, onStall, stallMs = NO_ANSWER_MS } = {}) {
  counter += 1;
  const id = `${Date.now().toString(36)}-${counter}-${Math.random().toString(36).slice(2, 8)}`;
  if (model.get("__static__")) {
    return Promise.reject(new RequestError("no-kernel", `${method} needs the notebook's kernel: this is an exported view`, id));
  }
  if (signal?.aborted) return Promise.reject(new RequestError("cancelled", `${method} was cancelled`, id));
  const channel = channelOf(model);
  return new Promise((resolve, reject) => {
    let timer = null;
    let stalled = false;
    const arm = () => {
      clearTimeout(timer);
      if (stalled) {
        stalled = false;
        onStall?.(false);
      }
      timer = setTimeout(() => {
        stalled = true;
        onStall?.(true);
      }, stallMs);
    };
    const onAbort = () => {
      try {
        model.send({ kind: "cancel", id });
      } catch {
        // no kernel to tell: the stall timer says so
      }
    };
    const finish = (settle, outcome) => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      release(model, channel, id);
      settle(outcome);
    };
    channel.pending.set(id, {
      receive(msg, buffers) {
        arm();
        if (msg.kind === "progress") onProgress?.({ done: msg.done, total: msg.total, text: msg.text ?? "" });
        else if (msg.kind === "answer") finish(resolve, restoreBuffers(msg.value, msg.buffer_paths, buffers));
        else if (msg.kind === "error") finish(reject, new RequestError("error", String(msg.message), id));
        else if (msg.kind === "cancelled") finish(reject, new RequestError("cancelled", `${method} was cancelled`, id));
      },
    });
    signal?.addEventListener("abort", onAbort, { once: true });
    arm();
    try {
      model.send({ kind: "request", id, method, args });
    } catch (err) {
      finish(reject, new RequestError("no-kernel", `${method}: no kernel to ask (${err?.message ?? err}); re-run the widget's cell`, id));
    }
  });
}
