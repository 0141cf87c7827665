// wharf chat: the page's whole logic, protocol wharf.chat.v1 (docs/PROTOCOL.md).
//
// One WebSocket to /chat. The room is the URL hash (#lobby), the name is
// kept in localStorage. When the connection drops (server restart, network),
// the page reconnects by itself with exponential backoff and joins its room
// again. User text only ever goes into the DOM as textContent.
"use strict";

(() => {
  const PROTOCOL = "wharf.chat.v1";
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const MAX_ITEMS = 500;

  const $ = (id) => document.getElementById(id);
  const app = $("app");
  const status = $("status");
  const online = $("online");
  const roomLabel = $("room-label");
  const messages = $("messages");
  const nameInput = $("name");
  const roomInput = $("room");
  const textInput = $("text");
  const sendButton = $("send");

  let ws = null;
  let myId = null;
  let wanted = null; // { room, name } once the user has joined
  let attempt = 0;
  let retryTimer = null;
  let countdown = null;
  let everOpen = false;

  // ---- view helpers -------------------------------------------------------

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
    sendButton.disabled = state !== "open";
  }

  function showChat(room) {
    app.dataset.view = "chat";
    $("join-view").hidden = true;
    $("chat-view").hidden = false;
    roomLabel.hidden = false;
    roomLabel.textContent = "#" + room;
    document.title = "#" + room + " · wharf chat";
    textInput.focus();
  }

  function showJoin() {
    app.dataset.view = "join";
    $("chat-view").hidden = true;
    $("join-view").hidden = false;
    roomLabel.hidden = true;
    online.hidden = true;
    document.title = "wharf chat";
  }

  function setOnline(n) {
    online.hidden = false;
    online.textContent = n + " online";
    online.dataset.count = String(n);
  }

  function nearBottom() {
    return messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
  }

  function append(li, force) {
    const stick = force || nearBottom();
    messages.append(li);
    while (messages.children.length > MAX_ITEMS) messages.firstElementChild.remove();
    if (stick) messages.scrollTop = messages.scrollHeight;
  }

  function notice(text, kind) {
    const li = document.createElement("li");
    li.className = "notice" + (kind ? " " + kind : "");
    li.textContent = text;
    append(li, false);
  }

  function time(ts) {
    const d = new Date(ts);
    return {
      short: d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
      full: d.toLocaleString(),
    };
  }

  function chatMessage(m) {
    const mine = m.id === myId;
    const li = document.createElement("li");
    li.className = "message" + (mine ? " mine" : "");
    li.dataset.from = String(m.id);
    const meta = document.createElement("div");
    meta.className = "meta";
    const from = document.createElement("span");
    from.className = "from";
    from.textContent = mine ? m.name + " (you)" : m.name;
    const when = document.createElement("time");
    const t = time(m.ts);
    when.textContent = t.short;
    when.title = t.full;
    when.dateTime = new Date(m.ts).toISOString();
    meta.append(from, when);
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = m.text;
    li.append(meta, text);
    append(li, mine);
  }

  // ---- the room in the URL -------------------------------------------------

  function hashRoom() {
    try {
      return decodeURIComponent(location.hash.slice(1)).trim();
    } catch {
      return "";
    }
  }

  function setHash(room) {
    const hash = "#" + encodeURIComponent(room);
    if (location.hash !== hash) history.replaceState(null, "", hash);
    $("share").textContent = "#" + room;
  }

  // ---- the connection -------------------------------------------------------

  function send(msg) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(Object.assign({ v: 1 }, msg)));
    return true;
  }

  function connect() {
    clearTimeout(retryTimer);
    clearInterval(countdown);
    retryTimer = countdown = null;
    setStatus("connecting", attempt ? "reconnecting…" : "connecting…");
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/chat";
    let socket;
    try {
      socket = new WebSocket(url, [PROTOCOL]);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws = socket;
    socket.onopen = () => {
      // What was negotiated, for the curious (and the browser test).
      document.body.dataset.extensions = socket.extensions;
      if (everOpen) notice("reconnected");
      everOpen = true;
      attempt = 0;
      setStatus("open", "online");
      if (wanted) send({ type: "join", room: wanted.room, name: wanted.name });
    };
    socket.onmessage = (event) => {
      let m;
      try {
        m = JSON.parse(event.data);
      } catch {
        return;
      }
      handle(m);
    };
    socket.onclose = (event) => {
      if (ws !== socket) return;
      ws = null;
      myId = null;
      if (wanted && everOpen && attempt === 0) {
        notice(event.code === 1001 ? "the server is restarting…" : "connection lost", "error");
      }
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    const base = Math.min(BACKOFF_FIRST_MS * 2 ** attempt, BACKOFF_MAX_MS);
    const delay = Math.round(base / 2 + (Math.random() * base) / 2);
    attempt += 1;
    const due = Date.now() + delay;
    const tick = () => {
      const s = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      setStatus("closed", s > 0 ? "offline · retry in " + s + " s" : "offline · retrying…");
    };
    tick();
    countdown = setInterval(tick, 1000);
    retryTimer = setTimeout(connect, delay);
  }

  // Back online, or back to the tab: don't wait for the backoff.
  function retryNow() {
    if (retryTimer) {
      attempt = 0;
      connect();
    }
  }
  window.addEventListener("online", retryNow);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") retryNow();
  });

  // ---- the protocol ---------------------------------------------------------

  function handle(m) {
    if (m.v !== 1) return;
    switch (m.type) {
      case "welcome":
        myId = m.id;
        break;
      case "joined":
        if (!wanted || m.room !== wanted.room) return;
        if (m.id === myId) notice("you joined #" + m.room + " as " + m.name);
        else notice(m.name + " joined");
        setOnline(m.online);
        break;
      case "left":
        if (!wanted || m.room !== wanted.room) return;
        if (m.id !== myId) notice(m.name + " left");
        setOnline(m.online);
        break;
      case "message":
        if (wanted && m.room === wanted.room) chatMessage(m);
        break;
      case "error":
        notice(m.reason || "error", "error");
        break;
    }
  }

  function join(room, name) {
    const switching = !wanted || wanted.room !== room;
    wanted = { room, name };
    try {
      localStorage.setItem("wharf.name", name);
    } catch {}
    setHash(room);
    if (switching) messages.replaceChildren();
    showChat(room);
    if (!send({ type: "join", room, name })) notice("not connected; joining when the server is back");
  }

  // ---- the forms -------------------------------------------------------------

  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = nameInput.value.trim();
    const room = roomInput.value.trim();
    if (name && room) join(room, name);
  });

  $("say-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = textInput.value;
    if (!text.trim()) return;
    if (send({ type: "say", text })) {
      textInput.value = "";
    }
    textInput.focus();
  });

  $("leave").addEventListener("click", () => {
    send({ type: "leave" });
    wanted = null;
    showJoin();
    nameInput.focus();
  });

  window.addEventListener("hashchange", () => {
    const room = hashRoom();
    if (!room) return;
    roomInput.value = room;
    $("share").textContent = "#" + room;
    if (wanted && wanted.room !== room) join(room, wanted.name);
  });

  // ---- start ------------------------------------------------------------------

  try {
    nameInput.value = localStorage.getItem("wharf.name") || "";
  } catch {}
  const initialRoom = hashRoom();
  if (initialRoom) roomInput.value = initialRoom;
  $("share").textContent = "#" + (roomInput.value || "lobby");
  roomInput.addEventListener("input", () => {
    $("share").textContent = "#" + (roomInput.value.trim() || "lobby");
  });
  if (nameInput.value) roomInput.focus();
  connect();
})();
