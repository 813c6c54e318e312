// hlbook live book page: an ordinary client of hlbook's public API on this port.
//
//   POST /info {"type":"hlbookCoins"}        the coin picker
//   WebSocket /ws: l2Book, bbo, trades       the ladder, depth chart, bbo and tape
//                  {"method":"health"}       status, height, lag, clients (every second)
//
// A token in the URL fragment (#token=T: the browser never sends fragments) goes on the
// WebSocket URL as ?token=T and on fetch as "Authorization: Bearer T".
// Prices and sizes are shown exactly as the server spells them; floats are used only for
// geometry (bar widths, the chart), and totals and spreads are exact decimal arithmetic.
"use strict";

(() => {
  const HEALTH_EVERY_MS = 1000;
  const HEALTH_SILENT_MS = 5000; // no health answer for this long: say so
  const MAX_TRADES = 60;
  const MARKETS = { perp: "Perpetuals", spot: "Spot", hip3: "HIP-3" };

  const $ = (id) => document.getElementById(id);
  const ui = {
    coin: $("coin"),
    nsig: $("nsig"),
    health: $("health"),
    status: $("h-status"),
    height: $("h-height"),
    lag: $("h-lag"),
    clients: $("h-clients"),
    banner: $("banner"),
    ladder: $("ladder"),
    asks: $("asks"),
    bids: $("bids"),
    midSpread: $("mid-spread"),
    bookCoin: $("book-coin"),
    bookTime: $("book-time"),
    bboBid: $("bbo-bid"),
    bboBidSz: $("bbo-bid-sz"),
    bboAsk: $("bbo-ask"),
    bboAskSz: $("bbo-ask-sz"),
    bboSpread: $("bbo-spread"),
    bboBps: $("bbo-bps"),
    chart: $("chart"),
    trades: $("trades"),
    socketState: $("socket-state"),
  };

  // -- the URL fragment: #token=T&coin=BTC&nsig=3 -------------------------------------------
  // Parsed by hand: URLSearchParams would turn a "+" of a base64 token into a space.
  function readFragment() {
    const out = new Map();
    for (const part of location.hash.slice(1).split("&")) {
      const eq = part.indexOf("=");
      if (eq <= 0) continue;
      try {
        out.set(part.slice(0, eq), decodeURIComponent(part.slice(eq + 1)));
      } catch (err) {
        // not percent-encoding: ignore the part
      }
    }
    return out;
  }

  function fragmentValue(value) {
    // ":" "/" "@" may stay as they are in a fragment: "#coin=xyz:XYZ100" reads better.
    return encodeURIComponent(value).replace(/%3A/g, ":").replace(/%2F/g, "/").replace(/%40/g, "@");
  }

  const fragment = readFragment();
  const token = fragment.get("token") || "";

  const state = {
    coins: [], // [{coin, market}] from hlbookCoins
    coin: fragment.get("coin") || "",
    nSigFigs: parseNSig(fragment.get("nsig")),
    ws: null,
    socket: "connecting", // connecting | open | closed
    extensions: "",
    closed: null, // {code, reason} of the last close
    attempts: 0, // reconnects since the last healthy answer
    retryAt: 0,
    retryTimer: 0,
    coinsTimer: 0,
    coinsAttempts: 0,
    subs: {}, // channel type -> the subscription sent on this socket
    confirmed: new Set(), // channel types whose current subscription the server confirmed
    book: null,
    bookSub: null, // the l2Book subscription `book` came from
    bbo: null,
    health: null,
    healthAt: 0,
    error: null, // {text, at}
    accessDenied: false,
    scheduled: false,
  };

  function parseNSig(value) {
    const n = Number(value);
    return [2, 3, 4, 5].includes(n) ? n : null;
  }

  function authHeaders() {
    return token ? { Authorization: "Bearer " + token } : {};
  }

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = token ? "?token=" + encodeURIComponent(token) : "";
    return scheme + "//" + location.host + "/ws" + query;
  }

  function rememberChoice() {
    const parts = [];
    if (state.coin) parts.push("coin=" + fragmentValue(state.coin));
    if (state.nSigFigs !== null) parts.push("nsig=" + state.nSigFigs);
    if (token) parts.push("token=" + fragmentValue(token));
    history.replaceState(null, "", "#" + parts.join("&"));
  }

  // -- exact decimals ------------------------------------------------------------------------
  // {v: BigInt, e: digits after the point}; null for anything that is not a plain decimal.
  function dec(text) {
    const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(text);
    if (!m) return null;
    const frac = m[3] || "";
    const v = BigInt(m[2] + frac);
    return { v: m[1] ? -v : v, e: frac.length };
  }

  function scale(d, e) {
    return d.v * 10n ** BigInt(e - d.e);
  }

  function add(a, b) {
    const e = Math.max(a.e, b.e);
    return { v: scale(a, e) + scale(b, e), e };
  }

  function sub(a, b) {
    return add(a, { v: -b.v, e: b.e });
  }

  // The node's spelling: no trailing zeros, but at least one digit after the point.
  function decText(d) {
    const negative = d.v < 0n;
    let digits = (negative ? -d.v : d.v).toString();
    let text;
    if (d.e === 0) {
      text = digits + ".0";
    } else {
      digits = digits.padStart(d.e + 1, "0");
      const frac = digits.slice(-d.e).replace(/0+$/, "");
      text = digits.slice(0, -d.e) + "." + (frac || "0");
    }
    return (negative ? "-" : "") + text;
  }

  // Running totals of a side: [{text, value}], exact text and a float for geometry.
  function totals(levels) {
    const out = [];
    let sum = { v: 0n, e: 0 };
    let exact = true;
    let float = 0;
    for (const level of levels) {
      float += Number(level.sz);
      const size = exact ? dec(level.sz) : null;
      if (size === null) exact = false;
      else sum = add(sum, size);
      out.push({ text: exact ? decText(sum) : String(float), value: float });
    }
    return out;
  }

  // -- formatting ----------------------------------------------------------------------------
  function grouped(n) {
    return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  function clock(ms) {
    const d = new Date(ms);
    const pad = (x) => String(x).padStart(2, "0");
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return "–";
    const sign = ms < 0 ? "−" : "";
    const a = Math.abs(ms);
    if (a < 1000) return sign + a + " ms";
    if (a < 60e3) return sign + (a / 1e3).toFixed(1) + " s";
    if (a < 3600e3) return sign + (a / 60e3).toFixed(1) + " min";
    if (a < 86400e3) return sign + (a / 3600e3).toFixed(1) + " h";
    return sign + (a / 86400e3).toFixed(1) + " d";
  }

  // Decimal points line up: a number is two inline blocks, its integer part right-aligned in
  // --{column}-i characters and the rest left-aligned in --{column}-f (set per render).
  function split(text) {
    const point = text.indexOf(".");
    return point < 0 ? [text, ""] : [text.slice(0, point), text.slice(point)];
  }

  function number(className, text) {
    const [whole, rest] = split(text);
    const cell = el("span", className + " num");
    cell.append(el("span", "i", whole), el("span", "f", rest));
    return cell;
  }

  // Widen the columns of `container` to fit `texts` (column -> strings); `grow` keeps wider.
  function fit(container, texts, grow) {
    for (const [column, values] of Object.entries(texts)) {
      let whole = 0;
      let rest = 0;
      for (const text of values) {
        const [w, r] = split(text);
        whole = Math.max(whole, w.length);
        rest = Math.max(rest, r.length);
      }
      for (const [part, width] of [["i", whole], ["f", rest]]) {
        const name = "--" + column + "-" + part;
        const old = grow ? parseInt(container.style.getPropertyValue(name), 10) || 0 : 0;
        container.style.setProperty(name, Math.max(old, width) + "ch");
      }
    }
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- coins ---------------------------------------------------------------------------------
  async function loadCoins() {
    clearTimeout(state.coinsTimer);
    let coins;
    try {
      const response = await fetch("/info", {
        method: "POST",
        headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify({ type: "hlbookCoins" }),
        cache: "no-store",
      });
      state.accessDenied = response.status === 401 || response.status === 403;
      if (!response.ok) throw new Error("HTTP " + response.status);
      coins = await response.json();
      if (!Array.isArray(coins)) throw new Error("not a list");
    } catch (err) {
      // Books not loaded yet (503), the server restarting, a wrong token: try again.
      const delay = Math.min(10000, 500 * 2 ** state.coinsAttempts++);
      state.coinsTimer = setTimeout(loadCoins, delay);
      changed();
      return;
    }
    state.coinsAttempts = 0;
    state.coins = coins;
    fillPicker();
    const names = coins.map((c) => c.coin);
    if (!names.includes(state.coin)) {
      state.coin = names.includes("BTC") ? "BTC" : names[0] || "";
      clearCoin();
    }
    ui.coin.value = state.coin;
    rememberChoice();
    sync();
    changed();
  }

  function fillPicker() {
    const groups = new Map();
    for (const { coin, market } of state.coins) {
      if (!groups.has(market)) groups.set(market, []);
      groups.get(market).push(coin);
    }
    const options = [];
    for (const [market, coins] of groups) {
      const group = el("optgroup");
      group.label = MARKETS[market] || market;
      for (const coin of coins) {
        const option = el("option", "", coin);
        option.value = coin;
        option.dataset.market = market;
        group.append(option);
      }
      options.push(group);
    }
    ui.coin.replaceChildren(...options);
  }

  // -- the WebSocket -------------------------------------------------------------------------
  function connect() {
    clearTimeout(state.retryTimer);
    setSocket("connecting");
    let ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch (err) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    state.subs = {};
    state.confirmed = new Set();
    ws.onopen = () => {
      state.extensions = ws.extensions;
      setSocket("open");
      askHealth();
      sync();
    };
    ws.onmessage = (event) => receive(event.data);
    ws.onclose = (event) => {
      if (state.ws !== ws) return;
      state.ws = null;
      state.closed = { code: event.code, reason: event.reason };
      state.health = null;
      setSocket("closed");
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    const delay = Math.min(10000, 500 * 2 ** state.attempts) * (0.75 + Math.random() * 0.5);
    state.attempts += 1;
    state.retryAt = Date.now() + delay;
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(() => {
      connect();
      loadCoins(); // the server may have restarted with other coins
    }, delay);
    changed();
  }

  function setSocket(value) {
    state.socket = value;
    document.body.dataset.socket = value;
    changed();
  }

  function send(message) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify(message));
    }
  }

  function askHealth() {
    send({ method: "health" });
  }

  function wanted() {
    const coin = state.coin;
    return {
      l2Book: { type: "l2Book", coin, nSigFigs: state.nSigFigs },
      bbo: { type: "bbo", coin },
      trades: { type: "trades", coin },
    };
  }

  function sameSubscription(a, b) {
    return (
      a.type === b.type && a.coin === b.coin && (a.nSigFigs ?? null) === (b.nSigFigs ?? null)
    );
  }

  // Make this socket's subscriptions what the picker says: unsubscribe what changed first.
  function sync() {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN || !state.coin) return;
    const want = wanted();
    for (const type of Object.keys(want)) {
      const have = state.subs[type];
      if (have && sameSubscription(have, want[type])) continue;
      if (have) send({ method: "unsubscribe", subscription: have });
      send({ method: "subscribe", subscription: want[type] });
      state.subs[type] = want[type];
      state.confirmed.delete(type);
    }
  }

  // Messages of a subscription count once the server confirmed it: whatever was in flight
  // for the previous one (another coin or aggregation) arrives before that confirmation.
  function current(type, coin) {
    return state.confirmed.has(type) && coin === state.coin;
  }

  function receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch (err) {
      return;
    }
    const data = message.data;
    switch (message.channel) {
      case "subscriptionResponse": {
        const subscription = data && data.subscription;
        const have = subscription && state.subs[subscription.type];
        if (data.method === "subscribe" && have && sameSubscription(have, subscription)) {
          state.confirmed.add(subscription.type);
        }
        break;
      }
      case "l2Book":
        if (data && current("l2Book", data.coin)) {
          state.book = data;
          state.bookSub = state.subs.l2Book;
          changed();
        }
        break;
      case "bbo":
        if (data && current("bbo", data.coin)) {
          state.bbo = data;
          changed();
        }
        break;
      case "trades":
        if (Array.isArray(data)) {
          const mine = data.filter((t) => current("trades", t.coin));
          if (mine.length) addTrades(mine);
        }
        break;
      case "health":
        state.health = data;
        state.healthAt = Date.now();
        state.attempts = 0; // a server that answers: the next drop starts the backoff over
        changed();
        break;
      case "error":
        state.error = { text: String(data), at: Date.now() };
        changed();
        break;
      default:
        break;
    }
  }

  // -- picking -------------------------------------------------------------------------------
  function clearCoin() {
    state.book = null;
    state.bookSub = null;
    state.bbo = null;
    ui.trades.replaceChildren(el("p", "empty muted", "waiting for trades…"));
    ui.trades.removeAttribute("style"); // the new coin's numbers set the column widths
  }

  function pickCoin(coin) {
    if (coin === state.coin) return;
    state.coin = coin;
    clearCoin();
    rememberChoice();
    sync();
    changed();
  }

  function pickNSig(n) {
    if (n === state.nSigFigs) return;
    state.nSigFigs = n;
    state.book = null;
    state.bookSub = null;
    rememberChoice();
    sync();
    changed();
  }

  ui.coin.addEventListener("change", () => pickCoin(ui.coin.value));
  ui.nsig.addEventListener("change", () => pickNSig(parseNSig(ui.nsig.value)));
  window.addEventListener("hashchange", () => {
    const next = readFragment();
    if ((next.get("token") || "") !== token) {
      location.reload(); // a new token: start over with it
      return;
    }
    if (next.get("coin") && next.get("coin") !== state.coin) {
      pickCoin(next.get("coin"));
      ui.coin.value = state.coin;
    }
    pickNSig(parseNSig(next.get("nsig")));
    ui.nsig.value = state.nSigFigs === null ? "" : String(state.nSigFigs);
  });

  // -- the trades tape -----------------------------------------------------------------------
  function addTrades(trades) {
    const empty = ui.trades.querySelector(".empty");
    if (empty) empty.remove();
    fit(ui.trades, { px: trades.map((t) => t.px), sz: trades.map((t) => t.sz) }, true);
    // Newest first: the node's order within a block, so the block's last trade goes on top.
    for (const trade of trades) {
      const buy = trade.side === "B";
      const row = el("div", "trade fresh " + (buy ? "buy" : "sell"));
      row.dataset.tid = String(trade.tid);
      row.dataset.px = trade.px;
      row.dataset.sz = trade.sz;
      row.dataset.side = trade.side;
      row.dataset.time = String(trade.time);
      row.title = "tid " + trade.tid + " · " + trade.hash;
      row.append(
        el("span", "t", clock(trade.time)),
        number("px", trade.px),
        number("sz", trade.sz),
        el("span", "side", buy ? "buy" : "sell"),
      );
      ui.trades.prepend(row);
    }
    while (ui.trades.childElementCount > MAX_TRADES) ui.trades.lastElementChild.remove();
  }

  // -- rendering -----------------------------------------------------------------------------
  function changed() {
    if (state.scheduled) return;
    state.scheduled = true;
    requestAnimationFrame(render);
  }

  function render() {
    state.scheduled = false;
    renderHealth();
    renderBook();
    renderBbo();
    drawChart();
  }

  function feed() {
    // What to say about the feed: [pill text, pill class, banner text or "", banner class].
    if (state.socket !== "open") {
      const wait = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
      const why = state.closed
        ? " (" + state.closed.code + (state.closed.reason ? ": " + state.closed.reason : "") + ")"
        : "";
      const hint = state.accessDenied ? " Access denied: open the page with #token=…" : "";
      const text =
        state.socket === "connecting"
          ? "Connecting to hlbook…" + hint
          : "Disconnected from hlbook" + why + "; reconnecting in " + wait + " s." + hint;
      return ["offline", "down", state.closed || state.accessDenied ? text : "", "down"];
    }
    const h = state.health;
    if (!h) return ["…", "", "", ""];
    if (Date.now() - state.healthAt > HEALTH_SILENT_MS) {
      return ["no answer", "warn", "hlbook has not answered for a while.", "warn"];
    }
    if (!h.live) {
      return [
        h.status,
        "warn",
        "The feed is " + h.status + ": the book shown may be behind the node.",
        "warn",
      ];
    }
    return ["live", "live", "", ""];
  }

  function renderHealth() {
    const h = state.health;
    const [pill, pillClass, banner, bannerClass] = feed();
    ui.status.textContent = pill;
    ui.status.className = "pill " + pillClass;
    ui.health.dataset.status = h ? h.status : "";
    ui.health.dataset.height = h && h.height !== null ? String(h.height) : "";
    ui.height.textContent = h && h.height !== null ? grouped(h.height) : "–";
    ui.lag.textContent = h ? duration(h.lag_ms) : "–";
    ui.lag.title = h && h.last_block_age_s !== null ? "last block " + h.last_block_age_s + " s ago" : "";
    ui.clients.textContent = h ? String(h.clients) : "–";
    let text = banner;
    let cls = bannerClass;
    if (!text && state.error && Date.now() - state.error.at < 15000) {
      text = state.error.text;
      cls = "warn";
    }
    ui.banner.hidden = !text;
    ui.banner.textContent = text;
    ui.banner.className = "banner " + cls;
    ui.ladder.classList.toggle("dim", pillClass !== "live");
    ui.socketState.textContent =
      state.socket === "open"
        ? "connected" + (state.extensions ? " · " + state.extensions.split(";")[0] : "")
        : state.socket;
  }

  function levelRow(level, side, total, max) {
    const row = el("div", "level");
    row.dataset.side = side;
    row.dataset.px = level.px;
    row.dataset.sz = level.sz;
    row.dataset.n = String(level.n);
    const bar = el("span", "bar");
    bar.style.width = ((100 * total.value) / max).toFixed(2) + "%";
    row.append(
      number("px", level.px),
      number("sz", level.sz),
      el("span", "n", String(level.n)),
      number("cum", total.text),
      bar,
    );
    return row;
  }

  function renderBook() {
    const book = state.book;
    ui.bookCoin.textContent = state.coin || "–";
    ui.ladder.dataset.coin = book ? book.coin : "";
    ui.ladder.dataset.time = book ? String(book.time) : "";
    const nsig = state.bookSub ? state.bookSub.nSigFigs : null;
    ui.ladder.dataset.nsigfigs = nsig === null ? "" : String(nsig);
    if (!book) {
      ui.asks.replaceChildren();
      ui.bids.replaceChildren(el("p", "empty muted", state.coin ? "loading…" : "no coin"));
      ui.bookTime.textContent = "–";
      return;
    }
    ui.bookTime.textContent = "block time " + clock(book.time);
    ui.bookTime.title = new Date(book.time).toISOString();
    const [bids, asks] = book.levels;
    const bidTotals = totals(bids);
    const askTotals = totals(asks);
    const max = Math.max(
      bidTotals.length ? bidTotals[bidTotals.length - 1].value : 0,
      askTotals.length ? askTotals[askTotals.length - 1].value : 0,
      1e-12,
    );
    const levels = [...bids, ...asks];
    fit(ui.ladder, {
      px: levels.map((l) => l.px),
      sz: levels.map((l) => l.sz),
      cum: [...bidTotals, ...askTotals].map((t) => t.text),
    });
    ui.bids.replaceChildren(...bids.map((l, i) => levelRow(l, "B", bidTotals[i], max)));
    // Asks read upwards from the spread: the best ask sits just above it.
    ui.asks.replaceChildren(...asks.map((l, i) => levelRow(l, "A", askTotals[i], max)).reverse());
  }

  function spread(bid, ask) {
    // [exact text, basis points text] of a bid and an ask level.
    const b = dec(bid.px);
    const a = dec(ask.px);
    const bps = ((Number(ask.px) - Number(bid.px)) / ((Number(ask.px) + Number(bid.px)) / 2)) * 1e4;
    return [b && a ? decText(sub(a, b)) : "–", bps.toFixed(2) + " bps"];
  }

  function renderBbo() {
    const [bid, ask] = state.bbo ? state.bbo.bbo : [null, null];
    ui.bboBid.textContent = bid ? bid.px : "–";
    ui.bboBidSz.textContent = bid ? bid.sz + " (" + bid.n + ")" : "–";
    ui.bboAsk.textContent = ask ? ask.px : "–";
    ui.bboAskSz.textContent = ask ? ask.sz + " (" + ask.n + ")" : "–";
    let [spreadText, bps] = ["–", "–"];
    if (bid && ask) [spreadText, bps] = spread(bid, ask);
    ui.bboSpread.textContent = spreadText;
    ui.bboBps.textContent = bps;
    ui.midSpread.textContent = bid && ask ? "spread " + spreadText + " · " + bps : "–";
  }

  // -- the depth chart -----------------------------------------------------------------------
  const colors = getComputedStyle(document.documentElement);
  const color = (name) => colors.getPropertyValue(name).trim();

  function drawChart() {
    const canvas = ui.chart;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px " + color("--mono");
    const book = state.book;
    const [bids, asks] = book ? book.levels : [[], []];
    if (!bids.length && !asks.length) {
      ctx.fillStyle = color("--muted");
      ctx.textAlign = "center";
      ctx.fillText(book ? "empty book" : "no book yet", width / 2, height / 2);
      return;
    }
    const bidTotals = totals(bids);
    const askTotals = totals(asks);
    // Centred on the spread, as wide as the farther side reaches (the nearer one stays flat
    // beyond its last level: its depth is at least that).
    const prices = [...bids, ...asks].map((l) => Number(l.px));
    const inside = bids.length && asks.length;
    const centre = inside ? (Number(bids[0].px) + Number(asks[0].px)) / 2 : prices[0];
    let reach = Math.max(...prices.map((p) => Math.abs(p - centre)));
    if (!(reach > 0)) reach = Math.abs(centre) * 1e-4 || 1;
    const low = centre - reach;
    const high = centre + reach;
    const top = Math.max(
      bidTotals.length ? bidTotals[bidTotals.length - 1].value : 0,
      askTotals.length ? askTotals[askTotals.length - 1].value : 0,
    );
    const pad = { left: 8, right: 8, top: 22, bottom: 22 };
    const x = (px) => pad.left + ((px - low) / (high - low)) * (width - pad.left - pad.right);
    const y = (size) => height - pad.bottom - (size / (top * 1.05)) * (height - pad.top - pad.bottom);

    // Grid: a few horizontal lines.
    ctx.strokeStyle = color("--line");
    ctx.lineWidth = 1;
    for (let i = 1; i <= 3; i++) {
      const gy = Math.round(y((top * i) / 3)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.left, gy);
      ctx.lineTo(width - pad.right, gy);
      ctx.stroke();
    }

    // One side as a step curve: cumulative size at each price, outwards from the spread.
    function side(levels, sums, edge, stroke, fill) {
      if (!levels.length) return;
      ctx.beginPath();
      ctx.moveTo(x(Number(levels[0].px)), y(0));
      let previous = 0;
      levels.forEach((level, i) => {
        const px = x(Number(level.px));
        ctx.lineTo(px, y(previous));
        ctx.lineTo(px, y(sums[i].value));
        previous = sums[i].value;
      });
      ctx.lineTo(edge, y(previous));
      ctx.lineTo(edge, y(0));
      ctx.closePath();
      ctx.fillStyle = fill;
      ctx.fill();
      ctx.strokeStyle = stroke;
      ctx.lineWidth = 1.5;
      ctx.stroke();
    }
    side(bids, bidTotals, pad.left, color("--bid"), color("--bid-bar"));
    side(asks, askTotals, width - pad.right, color("--ask"), color("--ask-bar"));

    // Labels: the strings as given (prices at the edges and the inside, totals per side).
    ctx.fillStyle = color("--muted");
    ctx.textBaseline = "alphabetic";
    const base = height - 6;
    // The inside, then the farthest level of each side next to it (kept on the canvas);
    // a label that would run into one already drawn moves to the edge, or is left out.
    const drawn = [];
    function label(text, at, align, edge) {
      const w = ctx.measureText(text).width;
      const place = (left) => Math.min(Math.max(left, pad.left), width - pad.right - w);
      const free = (left) => drawn.every(([a, b]) => left + w + 8 < a || left > b + 8);
      let left = place(align === "left" ? at : align === "right" ? at - w : at - w / 2);
      if (!free(left)) left = place(edge === "left" ? pad.left : width - pad.right - w);
      if (!free(left)) return;
      drawn.push([left, left + w]);
      ctx.textAlign = "left";
      ctx.fillText(text, left, base);
    }
    if (inside) label(bids[0].px + " | " + asks[0].px, x(centre), "center");
    const far = (levels) => levels[levels.length - 1];
    if (bids.length) label(far(bids).px, x(Number(far(bids).px)), "right", "left");
    if (asks.length) label(far(asks).px, x(Number(far(asks).px)), "left", "right");
    ctx.textBaseline = "top";
    ctx.textAlign = "left";
    ctx.fillStyle = color("--bid");
    if (bidTotals.length) ctx.fillText("bids Σ " + bidTotals[bidTotals.length - 1].text, pad.left, 4);
    ctx.textAlign = "right";
    ctx.fillStyle = color("--ask");
    if (askTotals.length) {
      ctx.fillText("asks Σ " + askTotals[askTotals.length - 1].text, width - pad.right, 4);
    }
  }

  new ResizeObserver(changed).observe(ui.chart);

  // -- start ---------------------------------------------------------------------------------
  ui.nsig.value = state.nSigFigs === null ? "" : String(state.nSigFigs);
  setInterval(() => {
    askHealth();
    changed(); // ages and countdowns move even when nothing arrives
  }, HEALTH_EVERY_MS);
  loadCoins();
  connect();
})();
