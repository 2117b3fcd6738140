/* The playground's script: chat and images over WS /ws/v1/chat (protocol: gateway/ws.py).
 *
 * One socket per page, opened on first use (and again after it closes), authenticated by the
 * session cookie. Chat: chat.request with the conversation so far, chat.delta frames appended as
 * they come, chat.done with usage and cost, or an error frame; Stop sends chat.cancel. Images:
 * image.request, job.created, then job.update frames until the job ends; the page also polls the
 * job (/playground/jobs/<id>) because updates need a channel layer the Celery worker shares.
 * No library, no build step: plain DOM, text set with textContent only.
 */
"use strict";

(() => {
  const root = document.getElementById("playground");
  if (!root) return;

  const $ = (id) => document.getElementById(id);
  const POLL_MS = 2000;
  const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function errorBox(message, code) {
    const box = el("p", "error", message);
    box.setAttribute("role", "alert");
    if (code) box.append(" ", el("code", "", `(${code})`));
    return box;
  }

  // "0.00001110" -> "$0.0000111", "0.07800000" -> "$0.078": the exact cost, without trailing zeros.
  function usd(text) {
    const [whole, fraction = ""] = String(text).split(".");
    return `$${whole}.${fraction.replace(/0+$/, "").padEnd(2, "0")}`;
  }

  function seconds(milliseconds) {
    return milliseconds < 1000 ? `${Math.round(milliseconds)} ms` : `${(milliseconds / 1000).toFixed(1)} s`;
  }

  // --- the socket -------------------------------------------------------------------------------
  const connection = $("connection");
  const handlers = {}; // frame type -> function(frame)
  const closeListeners = []; // function(reason), when the socket closes
  let socket = null;
  let opening = null;

  function setConnection(state, text) {
    connection.dataset.state = state;
    connection.textContent = text;
  }

  function closeReason(event) {
    const known = {
      4401: "You are signed out: reload the page to sign in again.",
      4403: "This page's address is not one of the gateway's hosts (ALLOWED_HOSTS), so it may not use the socket.",
      4408: "The connection was closed because the page stopped reading.",
    };
    return known[event.code] || `The connection closed (code ${event.code}${event.reason ? `: ${event.reason}` : ""}).`;
  }

  function openSocket() {
    if (socket) return Promise.resolve(socket);
    if (opening) return opening;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}${root.dataset.socketPath}`);
    setConnection("idle", "connecting…");
    opening = new Promise((resolve, reject) => {
      ws.onopen = () => {
        socket = ws;
        opening = null;
        setConnection("open", "connected");
        ws.send(JSON.stringify({ type: "jobs.subscribe", id: "jobs" }));
        resolve(ws);
      };
      ws.onmessage = (event) => {
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch {
          return;
        }
        const handler = handlers[frame.type];
        if (handler) handler(frame);
      };
      ws.onclose = (event) => {
        const reason = closeReason(event);
        socket = null;
        if (opening) {
          opening = null;
          reject(new Error(reason));
        }
        setConnection("closed", event.code === 4401 ? "signed out" : "disconnected");
        connection.title = reason;
        closeListeners.forEach((listener) => listener(reason));
      };
    });
    return opening;
  }

  async function send(frame) {
    const ws = await openSocket();
    ws.send(JSON.stringify(frame));
  }

  // Errors answer the request with the same id: a chat stream or an image request.
  const errorHandlers = new Map(); // frame id -> function(error)
  handlers.error = (frame) => {
    const handler = errorHandlers.get(frame.id);
    const error = frame.error || {};
    if (handler) handler(error);
    else showLooseError(error);
  };

  // --- model selects: price under the select, last choice remembered ----------------------------
  function wireModelSelect(select, priceHint, storageKey) {
    const saved = localStorage.getItem(storageKey);
    if (saved && [...select.options].some((option) => option.value === saved)) select.value = saved;
    const show = () => {
      const option = select.selectedOptions[0];
      priceHint.textContent = option ? option.dataset.price : "";
    };
    select.addEventListener("change", () => {
      localStorage.setItem(storageKey, select.value);
      show();
    });
    show();
  }
  wireModelSelect($("chat-model"), $("chat-price"), "pulse.playground.chat-model");
  wireModelSelect($("image-model"), $("image-price"), "pulse.playground.image-model");

  // --- chat -------------------------------------------------------------------------------------
  const transcript = $("transcript");
  const chatPrompt = $("chat-prompt");
  const sendButton = $("chat-send");
  const stopButton = $("chat-stop");
  const emptyNote = transcript.querySelector(".empty");
  const chat = { history: [], current: null, count: 0 };

  function keepScrolled() {
    transcript.scrollTop = transcript.scrollHeight;
  }

  function addTurn(role, label, text) {
    emptyNote.remove();
    const turn = el("div", `turn ${role}`);
    turn.append(el("span", "role", label), el("div", "text", text));
    transcript.append(turn);
    keepScrolled();
    return turn;
  }

  function setStreaming(streaming) {
    sendButton.disabled = streaming || !$("chat-model").value;
    stopButton.disabled = !streaming;
  }

  function showLooseError(error) {
    addTurn("notice", "Error", "").querySelector(".text").replaceWith(errorBox(error.message || "Unknown error", error.code));
  }

  // Ends the current stream: its answer joins the conversation when kept, else its prompt leaves it.
  function endChat(keepAnswer) {
    const current = chat.current;
    if (!current) return;
    chat.current = null;
    clearTimeout(current.stopTimer);
    errorHandlers.delete(current.id);
    current.turn.classList.remove("streaming");
    if (keepAnswer && current.answer) chat.history.push({ role: "assistant", content: current.answer });
    else chat.history.pop();
    setStreaming(false);
    keepScrolled();
  }

  function failChat(error) {
    chat.current?.turn.append(errorBox(error.message || "The request failed.", error.code));
    endChat(false);
  }

  $("chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = chatPrompt.value.trim();
    const model = $("chat-model").value;
    if (!text || !model || chat.current) return;
    chat.history.push({ role: "user", content: text });
    addTurn("user", "You", text);
    const turn = addTurn("assistant streaming", model, "");
    const id = `chat-${++chat.count}`;
    chat.current = { id, turn, text: turn.querySelector(".text"), answer: "", started: performance.now(), first: null };
    errorHandlers.set(id, failChat);
    chatPrompt.value = "";
    setStreaming(true);
    try {
      await send({ type: "chat.request", id, model, messages: chat.history });
    } catch (error) {
      failChat({ message: error.message });
    }
  });

  chatPrompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("chat-form").requestSubmit();
    }
  });

  handlers["chat.delta"] = (frame) => {
    const current = chat.current;
    if (!current || frame.id !== current.id || !frame.delta) return;
    current.first ??= performance.now();
    current.answer += frame.delta;
    current.text.append(frame.delta);
    keepScrolled();
  };

  handlers["chat.done"] = (frame) => {
    const current = chat.current;
    if (!current || frame.id !== current.id) return;
    clearTimeout(current.stopTimer);
    const usage = frame.usage || {};
    const meta = el("div", "meta usage");
    const took = `first token ${current.first ? seconds(current.first - current.started) : "none"}, total ${seconds(performance.now() - current.started)}`;
    meta.append(
      el("span", "", frame.provider ? `${frame.model} via ${frame.provider}` : frame.model),
      el("span", "tokens", `${usage.input_tokens} in + ${usage.output_tokens} out = ${usage.total_tokens} tokens`),
      el("span", "cost", usd(frame.cost_usd)),
      el("span", "", took),
    );
    if (frame.finish_reason === "canceled") meta.prepend(el("span", "stopped", "Stopped:"));
    else if (frame.finish_reason && frame.finish_reason !== "stop") meta.append(el("span", "", `finish: ${frame.finish_reason}`));
    current.turn.append(meta);
    endChat(true);
  };

  // A stopped stream still ends with chat.done (finish_reason "canceled"), with what was produced and
  // billed. A server that answered a cancel with nothing would leave the page waiting: it gives up after
  // a few seconds and ends the stream itself.
  stopButton.addEventListener("click", () => {
    const current = chat.current;
    if (!current || current.stopTimer) return;
    stopButton.disabled = true;
    socket?.send(JSON.stringify({ type: "chat.cancel", id: current.id }));
    current.stopTimer = setTimeout(() => {
      if (chat.current !== current) return;
      current.turn.append(el("div", "meta", "Stopped."));
      endChat(true);
    }, 3000);
  });

  $("chat-clear").addEventListener("click", () => {
    const current = chat.current;
    if (current) {
      socket?.send(JSON.stringify({ type: "chat.cancel", id: current.id }));
      clearTimeout(current.stopTimer);
      endChat(false); // its chat.done, if any, finds no stream here any more
    }
    chat.history = [];
    transcript.replaceChildren(emptyNote);
    chatPrompt.focus();
  });

  closeListeners.push((reason) => {
    if (chat.current) failChat({ message: reason });
  });

  // --- images -----------------------------------------------------------------------------------
  const jobsBox = $("jobs");
  const imagePrompt = $("image-prompt");
  const requested = new Map(); // image.request id -> card, until job.created
  const cards = new Map(); // job id -> card
  let imageCount = 0;

  function jobCard(prompt, model) {
    const node = el("article", "job");
    const status = el("div", "meta");
    const state = el("span", "status", "Sending…");
    status.append(el("span", "", model), state);
    node.append(el("p", "prompt", prompt), status);
    jobsBox.prepend(node);
    return { node, state, status, done: false };
  }

  function endCard(card) {
    card.done = true;
    for (const [id, pending] of requested) if (pending === card) requested.delete(id);
    for (const [id, known] of errorHandlers) if (known === card.fail) errorHandlers.delete(id);
  }

  function failCard(card, error) {
    if (card.done) return;
    card.state.textContent = "failed";
    card.state.dataset.status = "failed";
    card.node.append(errorBox(error.message || "The job failed.", error.code));
    endCard(card);
  }

  function renderJob(card, job) {
    if (card.done) return; // a late update or poll never undoes the end
    card.state.dataset.status = job.status;
    if (!TERMINAL.has(job.status)) {
      card.state.textContent = job.status === "running" ? "generating…" : `${job.status}…`;
      return;
    }
    if (job.status !== "succeeded") {
      failCard(card, job.error || { message: `The job was ${job.status}.` });
      return;
    }
    const took = new Date(job.finished_at) - new Date(job.created_at);
    const images = job.usage?.images ?? job.outputs.length;
    card.state.textContent = `done · ${images} image${images === 1 ? "" : "s"} · ${usd(job.cost_usd)} · ${seconds(took)}`;
    card.state.classList.add("cost");
    const outputs = el("div", "outputs");
    job.outputs.forEach((output, index) => {
      const link = el("a");
      link.href = output.url; // signed and relative: works for an <img> without the API key
      link.target = "_blank";
      link.rel = "noopener";
      const media = output.content_type.startsWith("video/") ? el("video") : el("img");
      media.src = output.url;
      if (media.tagName === "VIDEO") media.controls = true;
      else media.alt = `Image ${index + 1}: ${card.node.querySelector(".prompt").textContent}`;
      link.append(media);
      outputs.append(link);
    });
    card.node.append(outputs);
    endCard(card);
  }

  const jobUrl = (jobId) => root.dataset.jobUrl.replace("00000000-0000-0000-0000-000000000000", jobId);
  const sleep = (milliseconds) => new Promise((resolve) => setTimeout(resolve, milliseconds));

  async function poll(jobId, card) {
    while (!card.done) {
      await sleep(POLL_MS);
      if (card.done) return;
      try {
        const response = await fetch(jobUrl(jobId), { headers: { Accept: "application/json" }, redirect: "manual" });
        if (response.type === "opaqueredirect") {
          failCard(card, { message: "You are signed out: reload the page to sign in again." });
        } else if (response.ok) {
          renderJob(card, await response.json());
        }
      } catch {
        // A network blip: the next poll, or a job.update, catches up.
      }
    }
  }

  $("image-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const prompt = imagePrompt.value.trim();
    const model = $("image-model").value;
    if (!prompt || !model) return;
    const id = `image-${++imageCount}`;
    const card = jobCard(prompt, model);
    card.fail = (error) => failCard(card, error);
    requested.set(id, card);
    errorHandlers.set(id, card.fail);
    try {
      await send({ type: "image.request", id, model, prompt, count: Number($("image-count").value) });
    } catch (error) {
      card.fail({ message: error.message });
    }
  });

  handlers["job.created"] = (frame) => {
    const card = requested.get(frame.id);
    if (!card) return;
    requested.delete(frame.id);
    errorHandlers.delete(frame.id);
    cards.set(frame.job.id, card);
    renderJob(card, frame.job);
    poll(frame.job.id, card);
  };

  handlers["job.update"] = (frame) => {
    const card = cards.get(frame.job.id);
    if (card) renderJob(card, frame.job); // other jobs of this user (another tab, the API) are not shown
  };

  closeListeners.push((reason) => {
    // Requests not yet answered are lost with the socket; created jobs carry on (polled).
    for (const card of [...requested.values()]) failCard(card, { message: reason });
  });

  setStreaming(false);
})();
