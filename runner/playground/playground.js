// The playground page: one prompt goes to every pane; each pane streams its
// model's reply from its proxy route (/proxy/N, OpenAI's chat completions
// with server-sent events) and keeps its own conversation. A reply that
// comes with sources (a local model served with a RAG store) lists them
// under it. A session exports as a recipe cell that replays it.
//
// ?autotest=PROMPT sends PROMPT once the panes are ready, then shows the
// exported cell and sets <body data-autotest="done"> (for headless tests).
"use strict";

const state = { panes: [], busy: false };

function element(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function makePane(cfg, defaults) {
  const el = document.getElementById("pane-template").content.firstElementChild.cloneNode(true);
  el.querySelector(".pane-title").textContent = cfg.title;
  el.querySelector(".pane-source").textContent = cfg.kind === "local" ? "local: " + cfg.source : cfg.source;
  el.querySelector(".system").value = defaults.system;
  el.querySelector(".temperature").value = defaults.temperature;
  el.querySelector(".max-tokens").value = defaults.max_tokens;
  el.dataset.chunks = "0";
  document.getElementById("panes").appendChild(el);
  return { cfg, el, history: [], turns: [] };
}

function settingsOf(pane) {
  const number = (selector, fallback) => {
    const v = Number(pane.el.querySelector(selector).value);
    return Number.isFinite(v) && v >= 0 ? v : fallback;
  };
  return {
    system: pane.el.querySelector(".system").value,
    temperature: number(".temperature", 0.7),
    max_tokens: Math.max(1, Math.round(number(".max-tokens", 256))),
  };
}

function addMessage(pane, role, text) {
  const box = pane.el.querySelector(".messages");
  const m = element("div", "message " + role, text);
  box.appendChild(m);
  box.scrollTop = box.scrollHeight;
  return m;
}

// Calls onData with the data of each server-sent event of body until the
// stream ends or onData returns false.
async function readEvents(body, onData) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, end).split("\n").filter((l) => l.startsWith("data:"));
      buffer = buffer.slice(end + 2);
      const data = lines.map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (lines.length && onData(data) === false) {
        reader.cancel();
        return;
      }
    }
  }
}

async function failureOf(response) {
  const text = await response.text();
  try {
    return JSON.parse(text).error.message;
  } catch (e) {
    return "HTTP " + response.status + ": " + text.slice(0, 200);
  }
}

// The sources a reply was given, numbered as the model was asked to cite
// them, each with its source and title; a click opens its text.
function sourcesElement(sources) {
  const box = element("div", "sources");
  box.appendChild(element("div", "sources-head", "Sources"));
  for (const s of sources) {
    const item = element("details", "source");
    const where = [s.source, s.title].filter(Boolean).join(" \u203A ") || "chunk " + s.id;
    item.appendChild(element("summary", null, "[" + s.index + "] " + where));
    item.appendChild(element("div", "source-text", s.text));
    item.title = "score " + Number(s.score).toFixed(3);
    box.appendChild(item);
  }
  return box;
}

// "150 tokens · first token 0.05 s · 0.10 s · 1500.0 tokens/s"; the
// count is of events when the endpoint reports no usage.
function statsText(r) {
  const seconds = (ms) => (ms / 1000).toFixed(2) + " s";
  const parts = [r.tokens + (r.counted ? " tokens" : " events")];
  if (r.first !== null) parts.push("first token " + seconds(r.first));
  parts.push(seconds(r.total));
  if (r.tokens && r.total > 0) parts.push((r.tokens / (r.total / 1000)).toFixed(1) + " tokens/s");
  return parts.join(" · ");
}

// Sends the conversation with prompt to one pane's model and streams the reply in.
async function ask(pane, prompt) {
  const s = settingsOf(pane);
  pane.history.push({ role: "user", content: prompt });
  addMessage(pane, "user", prompt);
  const bubble = addMessage(pane, "assistant", "");
  bubble.classList.add("streaming");
  const messages = (s.system ? [{ role: "system", content: s.system }] : []).concat(pane.history);
  const started = performance.now();
  const r = { text: "", chunks: 0, first: null, tokens: 0, counted: false, total: 0 };
  let failure = null;
  let sources = null;
  try {
    const response = await fetch(pane.cfg.endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: pane.cfg.model, messages, temperature: s.temperature, max_tokens: s.max_tokens,
        stream: true, stream_options: { include_usage: true } }),
    });
    if (!response.ok) throw new Error(await failureOf(response));
    await readEvents(response.body, (data) => {
      if (data === "[DONE]") return false;
      const event = JSON.parse(data);
      if (event.error) throw new Error(event.error.message);
      if (event.sources && event.sources.length && !sources) {
        sources = sourcesElement(event.sources);
        bubble.after(sources);
      }
      const choice = event.choices && event.choices[0];
      const piece = choice && choice.delta && choice.delta.content;
      if (piece) {
        if (r.first === null) r.first = performance.now() - started;
        r.text += piece;
        r.chunks++;
        pane.el.dataset.chunks = String(r.chunks);
        bubble.textContent = r.text;
        bubble.parentNode.scrollTop = bubble.parentNode.scrollHeight;
      }
      if (event.usage) {
        r.tokens = event.usage.completion_tokens;
        r.counted = true;
      }
    });
  } catch (e) {
    failure = e.message || String(e);
  }
  r.total = performance.now() - started;
  bubble.classList.remove("streaming");
  if (failure) {
    pane.history.pop();
    bubble.classList.add("error");
    bubble.textContent = (r.text ? r.text + "\n" : "") + "error: " + failure;
    pane.el.dataset.failed = "true";
    return;
  }
  if (!r.counted) r.tokens = r.chunks;
  pane.history.push({ role: "assistant", content: r.text });
  pane.turns.push({ prompt, reply: r.text, system: s.system, temperature: s.temperature, max_tokens: s.max_tokens });
  const stats = element("div", "stats", statsText(r));
  (sources || bubble).after(stats);
  pane.el.dataset.replies = String(pane.turns.length);
}

async function send(prompt) {
  if (state.busy || !prompt.trim()) return;
  state.busy = true;
  document.getElementById("send").disabled = true;
  document.getElementById("prompt").value = "";
  await Promise.all(state.panes.map((pane) => ask(pane, prompt)));
  state.busy = false;
  document.getElementById("send").disabled = false;
}

// ---- export as a recipe cell ----

function luaString(s) {
  const escape = (c) => {
    if (c === "\\") return "\\\\";
    if (c === '"') return '\\"';
    if (c === "\n") return "\\n";
    return "\\" + String(c.charCodeAt(0)).padStart(3, "0");
  };
  return '"' + s.replace(/[\\"\x00-\x1f\x7f]/g, escape) + '"';
}

function luaTurns(turns) {
  return turns.map((t) => "    { prompt = " + luaString(t.prompt) + ", system = " + luaString(t.system) +
    ", temperature = " + t.temperature + ", max_tokens = " + t.max_tokens + " },\n").join("");
}

function luaPane(pane, i) {
  const cfg = pane.cfg;
  const n = i + 1;
  if (cfg.kind === "local" && cfg.index) {
    return "  -- pane " + n + ": " + cfg.title + " (local, with sources from " + cfg.index + ")\n" +
      "  local srv" + n + " = mf.deploy.serve({ model = " + luaString(cfg.source) + ", index = " +
      luaString(cfg.index) + (cfg.top_k ? ", top_k = " + cfg.top_k : "") + ", port = 0 })\n" +
      "  replay(function(messages, opts)\n" +
      "    local reply = mf.http.post_json(srv" + n + ".url .. \"/v1/chat/completions\", { messages = messages,\n" +
      "      temperature = opts.temperature, max_tokens = opts.max_tokens }, { timeout = 300 })\n" +
      "    return reply.choices[1].message.content\n" +
      "  end, {\n" + luaTurns(pane.turns) + "  })\n" +
      "  srv" + n + ".stop()\n";
  }
  if (cfg.kind === "local") {
    return "  -- pane " + n + ": " + cfg.title + " (local)\n" +
      "  local model" + n + " = mf.model.load(" + luaString(cfg.source) + ")\n" +
      "  local tok" + n + " = mf.tokenizer.load(" + luaString(cfg.source) + ")\n" +
      "  replay(function(messages, opts) return (model" + n + ":chat(tok" + n + ", messages, opts)) end, {\n" +
      luaTurns(pane.turns) + "  })\n";
  }
  return "  -- pane " + n + ": " + cfg.title + " at " + cfg.source + "\n" +
    "  replay(function(messages, opts)\n" +
    "    local reply = mf.http.post_json(" + luaString(cfg.upstream) + ", { model = " + luaString(cfg.model) + ",\n" +
    "      messages = messages, temperature = opts.temperature, max_tokens = opts.max_tokens },\n" +
    "      { api_key = os.getenv(\"OPENAI_API_KEY\") or os.getenv(\"MOONFORGE_API_KEY\"), timeout = 300 })\n" +
    "    return reply.choices[1].message.content\n" +
    "  end, {\n" + luaTurns(pane.turns) + "  })\n";
}

function exportCell() {
  const panes = state.panes.filter((p) => p.turns.length > 0);
  if (panes.length === 0) return "-- nothing to export yet: send a prompt first\n";
  return "-- A moonforge playground session (" + new Date().toISOString().slice(0, 19) + "Z), replayed:\n" +
    "-- each pane's prompts are sent again with its settings of the time.\n" +
    "r:cell(\"playground session\", function(ctx)\n" +
    "  local mf = require \"moonforge\"\n" +
    "  local function replay(chat, turns)\n" +
    "    local history = {}\n" +
    "    for _, turn in ipairs(turns) do\n" +
    "      history[#history + 1] = { role = \"user\", content = turn.prompt }\n" +
    "      local messages = {}\n" +
    "      if turn.system ~= \"\" then messages[1] = { role = \"system\", content = turn.system } end\n" +
    "      for _, m in ipairs(history) do messages[#messages + 1] = m end\n" +
    "      local reply = chat(messages, { temperature = turn.temperature, max_tokens = turn.max_tokens })\n" +
    "      history[#history + 1] = { role = \"assistant\", content = reply }\n" +
    "      print(reply)\n" +
    "    end\n" +
    "  end\n\n" +
    state.panes.map((p, i) => (p.turns.length ? luaPane(p, i) : "")).filter(Boolean).join("\n") +
    "end)\n";
}

function showExport() {
  document.getElementById("export-text").textContent = exportCell();  // text, so a DOM dump shows it
  document.getElementById("export-panel").hidden = false;
}

async function copyExport() {
  const text = document.getElementById("export-text");
  try {
    await navigator.clipboard.writeText(text.value);
  } catch (e) {
    text.select();
    document.execCommand("copy");
  }
}

function downloadExport() {
  const blob = new Blob([document.getElementById("export-text").value], { type: "text/x-lua" });
  const a = element("a");
  a.href = URL.createObjectURL(blob);
  a.download = "playground_session.lua";
  a.click();
  URL.revokeObjectURL(a.href);
}

function newSession() {
  if (state.busy) return;
  for (const pane of state.panes) {
    pane.history = [];
    pane.turns = [];
    pane.el.querySelector(".messages").replaceChildren();
  }
}

async function main() {
  const config = await (await fetch("panes.json")).json();
  state.panes = config.panes.map((cfg) => makePane(cfg, config.defaults));
  const prompt = document.getElementById("prompt");
  document.getElementById("prompt-form").addEventListener("submit", (e) => {
    e.preventDefault();
    send(prompt.value);
  });
  prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      send(prompt.value);
    }
  });
  document.getElementById("reset").addEventListener("click", newSession);
  document.getElementById("export").addEventListener("click", showExport);
  document.getElementById("copy").addEventListener("click", copyExport);
  document.getElementById("download").addEventListener("click", downloadExport);
  document.getElementById("close-export").addEventListener("click", () => {
    document.getElementById("export-panel").hidden = true;
  });
  const autotest = new URLSearchParams(location.search).get("autotest");
  if (autotest) {
    await send(autotest);
    showExport();
    document.body.dataset.autotest = "done";
  }
}

main().catch((e) => {
  document.body.dataset.autotest = "failed";
  document.getElementById("panes").textContent = "The playground could not start: " + e.message;
});
