// byockit preview page: frames, stats and params over one WebSocket (see byockit/client/preview.py).
"use strict";

const SIDES = ["input", "output"];
const RECONNECT_MS = 1000;

const connection = document.getElementById("connection");
const form = document.getElementById("params-form");
const textarea = document.getElementById("params");
const reply = document.getElementById("reply");
let socket = null;
let formEdited = false;

function connect() {
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    connection.textContent = "live";
  };
  socket.onclose = () => {
    connection.textContent = "disconnected, retrying…";
    setTimeout(connect, RECONNECT_MS);
  };
  socket.onmessage = (event) => {
    if (typeof event.data === "string") {
      handleMessage(JSON.parse(event.data));
    } else {
      showFrame(new Uint8Array(event.data));
    }
  };
}

// A binary message: one byte naming the side (0: input, 1: output), then a JPEG.
function showFrame(bytes) {
  const image = document.getElementById(SIDES[bytes[0]]);
  if (!image) {
    return;
  }
  const previous = image.src;
  image.src = URL.createObjectURL(new Blob([bytes.subarray(1)], { type: "image/jpeg" }));
  if (previous.startsWith("blob:")) {
    URL.revokeObjectURL(previous);
  }
}

function handleMessage(message) {
  if (message.type === "state") {
    showState(message);
  } else if (message.type === "reply") {
    reply.textContent =
      "error" in message ? `error: ${message.error}` : `${message.status} ${message.body}`;
  }
}

function formatFps(fps) {
  return fps === null ? "no frames yet" : `${fps.toFixed(1)} fps`;
}

function showState(state) {
  document.getElementById("input-stats").textContent = formatFps(state.input.fps);
  const latency = state.output.latency_ms;
  document.getElementById("output-stats").textContent =
    formatFps(state.output.fps) +
    (latency === null ? ", latency unknown" : `, latency ${Math.round(latency)} ms`);
  const stats = document.getElementById("stats");
  stats.replaceChildren(
    ...Object.entries(state.stats).flatMap(([name, value]) => {
      const term = document.createElement("dt");
      term.textContent = name;
      const detail = document.createElement("dd");
      detail.textContent = typeof value === "string" ? value : JSON.stringify(value);
      return [term, detail];
    }),
  );
  if (state.params !== null) {
    const text = JSON.stringify(state.params, null, 2);
    document.getElementById("current-params").textContent = text;
    if (!formEdited) {
      textarea.value = text;
    }
  }
  for (const element of form.elements) {
    element.disabled = !state.params_form;
  }
  if (!state.params_form) {
    reply.textContent = "params cannot be changed from this preview";
  }
}

textarea.addEventListener("input", () => {
  formEdited = true;
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (socket === null || socket.readyState !== WebSocket.OPEN) {
    reply.textContent = "error: not connected";
    return;
  }
  reply.textContent = "sending…";
  socket.send(JSON.stringify({ type: "params", text: textarea.value }));
});

connect();
