#!/usr/bin/env node
// A stand-in for chat-server, for working on the web client (and its e2e script) without the
// Rust build: the same API shape, in memory, with a dummy assistant that streams word by word.
// It reads the same settings as the real server:
//   CHAT__SERVER__PORT (default 8000), CHAT__WEB__DIST_DIR (serves the built client if set),
//   CHAT__ASSISTANT__DUMMY__MODE (canned | deterministic: echoes "You said: <text>"),
//   CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS (default 60).
// Streams are resumable like chat-server's: every event has `id: <generation_id>:<sequence>`,
// each generation opens with `event: start`, and GET /api/v1/conversations/{id}/stream replays
// and follows a generation (Last-Event-ID header or ?after=), or the one in progress;
// POST /api/v1/conversations/{id}/generations/{generation_id}/stop ends one where it got to; a
// streamed send may choose its reply's generation_id.
// Usage: CHAT_SERVER_BIN=e2e/mock-server.mjs npm run e2e   or   node e2e/mock-server.mjs
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import path from 'node:path';

const port = Number(process.env.CHAT__SERVER__PORT ?? 8000);
const dist = process.env.CHAT__WEB__DIST_DIR;
const replies = [
  "Hi there! I'm a simulated AI assistant.",
  'That is an interesting question. Let me think about it for a moment.',
  'Here is what I would suggest: start small, test often, and keep notes.',
];

const deterministic = process.env.CHAT__ASSISTANT__DUMMY__MODE === 'deterministic';
const maxMessageChars = Number(process.env.CHAT__LIMITS__MAX_MESSAGE_CHARS ?? 16000);
const wordDelay = Number(process.env.CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS ?? 60);
/** How long a finished generation's events stay available for resuming. */
const LOG_TTL_MS = 60_000;

const conversations = new Map();
/** generation id -> { id, conversationId, events: [{ seq, event, data }], finished, listeners: Set } */
const generations = new Map();
/** conversation id -> the generation in progress there */
const active = new Map();
const messages = new Map();
let clock = Date.now();
const now = () => new Date((clock = Math.max(clock + 1, Date.now()))).toISOString();

const deletedIds = new Set();

function createConversation(title = 'New chat', id = randomUUID()) {
  const t = now();
  const c = { id, title, created_at: t, updated_at: t };
  conversations.set(c.id, c);
  messages.set(c.id, []);
  return c;
}
createConversation('Default conversation');

const send = (res, status, body, headers = {}) => {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(body === undefined ? undefined : JSON.stringify(body));
};
const fail = (res, status, message, code) => send(res, status, { status: 'error', message, code });
const readBody = async (req) => {
  let s = '';
  for await (const chunk of req) s += chunk;
  try {
    return JSON.parse(s || '{}');
  } catch {
    return undefined;
  }
};
const page = (items, limit, cursorIndex) => ({ items, next_cursor: cursorIndex });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function emit(gen, event, data) {
  const ev = { seq: gen.events.length + 1, event, data: JSON.stringify(data) };
  gen.events.push(ev);
  if (event === 'done' || event === 'error') {
    gen.finished = true;
    active.delete(gen.conversationId);
    setTimeout(() => generations.delete(gen.id), LOG_TTL_MS).unref();
  }
  for (const listener of [...gen.listeners]) listener(ev);
}

const frame = (gen, ev) => `id: ${gen.id}:${ev.seq}\nevent: ${ev.event}\ndata: ${ev.data}\n\n`;

/** Writes the events of `gen` after `after`, then the live ones until done/error, then ends. */
function follow(res, gen, after) {
  res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
  for (const ev of gen.events) if (ev.seq > after) res.write(frame(gen, ev));
  if (gen.finished) return res.end();
  const listener = (ev) => {
    if (res.destroyed) return gen.listeners.delete(listener);
    res.write(frame(gen, ev));
    if (gen.finished) {
      gen.listeners.delete(listener);
      res.end();
    }
  };
  gen.listeners.add(listener);
  res.on('close', () => gen.listeners.delete(listener));
}

const server = createServer(async (req, res) => {
  const url = new URL(req.url ?? '/', 'http://x');
  const p = url.pathname;
  if (p === '/healthz' || p === '/readyz') return send(res, 200, { status: 'ok' });
  if (p === '/api/v1/limits' && req.method === 'GET') return send(res, 200, { max_message_chars: maxMessageChars, max_title_chars: 200 });
  const stop = /^\/api\/v1\/conversations\/([^/]+)\/generations\/([^/]+)\/stop$/.exec(p);
  if (stop && req.method === 'POST') {
    const gen = generations.get(stop[2]);
    if (!gen || gen.conversationId !== stop[1]) return fail(res, 404, 'No reply of this conversation with this generation id is known.', 'generation_not_found');
    if (gen.finished) return send(res, 200, { status: 'finished' });
    gen.stopRequested = true;
    const ended = () => {
      if (!gen.finished) return;
      gen.listeners.delete(ended);
      send(res, 200, { status: 'stopped' });
    };
    gen.listeners.add(ended);
    return;
  }
  if (p === '/api/v1/conversations') {
    if (req.method === 'GET') {
      const limit = Number(url.searchParams.get('limit') ?? 50);
      const all = [...conversations.values()].sort((a, b) => b.updated_at.localeCompare(a.updated_at));
      const start = Number(url.searchParams.get('cursor') ?? 0);
      const items = all.slice(start, start + limit);
      return send(res, 200, page(items, limit, start + limit < all.length ? String(start + limit) : null));
    }
    if (req.method === 'POST') {
      const body = await readBody(req);
      if (!body) return fail(res, 400, 'Invalid JSON body.', 'invalid_json');
      // As chat-server: a create under an id in use answers that conversation, as stored; a
      // deleted conversation's id is not used again.
      if (typeof body.id === 'string' && conversations.has(body.id)) return send(res, 200, conversations.get(body.id));
      if (deletedIds.has(body.id)) return fail(res, 409, 'A conversation with this id was deleted.', 'conversation_deleted');
      return send(res, 201, createConversation(body.title, body.id));
    }
  }
  const sm = /^\/api\/v1\/conversations\/([^/]+)\/stream$/.exec(p);
  if (sm && req.method === 'GET') {
    const c = conversations.get(sm[1]);
    if (!c) return fail(res, 404, 'Conversation not found.', 'conversation_not_found');
    const cursor = req.headers['last-event-id'] ?? url.searchParams.get('after');
    if (cursor !== null && cursor !== undefined) {
      const cm = /^([0-9a-f-]{36}):(\d+)$/.exec(cursor);
      if (!cm) return fail(res, 400, 'Malformed event id.', 'invalid_cursor');
      const gen = generations.get(cm[1]);
      const after = Number(cm[2]);
      if (!gen || gen.conversationId !== c.id || (gen.finished && after >= gen.events.length)) return res.writeHead(204).end();
      return follow(res, gen, after);
    }
    const gen = active.get(c.id);
    if (!gen) return res.writeHead(204).end();
    return follow(res, gen, 0);
  }
  const m = /^\/api\/v1\/conversations\/([^/]+)(\/messages)?$/.exec(p);
  if (m) {
    const c = conversations.get(m[1]);
    if (!c) return fail(res, 404, 'Conversation not found.', 'conversation_not_found');
    const list = messages.get(c.id);
    if (!m[2]) {
      if (req.method === 'GET') return send(res, 200, c);
      if (req.method === 'PATCH') {
        const body = await readBody(req);
        if (!body || typeof body.title !== 'string' || !body.title.trim()) return fail(res, 400, 'Title must not be blank.', 'invalid_title');
        c.title = body.title.trim();
        c.updated_at = now();
        return send(res, 200, c);
      }
      if (req.method === 'DELETE') {
        conversations.delete(c.id);
        deletedIds.add(c.id);
        messages.delete(c.id);
        res.writeHead(204).end();
        return;
      }
    } else if (req.method === 'GET') {
      const limit = Number(url.searchParams.get('limit') ?? 50);
      const before = url.searchParams.get('before');
      const end = before === null ? list.length : Number(before);
      const start = Math.max(0, end - limit);
      return send(res, 200, page(list.slice(start, end), limit, start > 0 ? String(start) : null));
    } else if (req.method === 'POST') {
      const body = await readBody(req);
      if (!body || typeof body.content !== 'string' || !body.content.trim()) return fail(res, 400, 'Message must not be blank.', 'invalid_message');
      if ([...body.content].length > maxMessageChars) {
        return fail(res, 413, `content must be at most ${maxMessageChars} characters, got ${[...body.content].length}`, 'text_too_long');
      }
      const canned = replies[(deterministic ? body.content.length : list.length) % replies.length];
      let reply = deterministic ? `${canned} You said: ${body.content}` : canned;
      const store = () => {
        const user = { id: randomUUID(), conversation_id: c.id, role: 'user', content: body.content, created_at: now() };
        const assistant = { id: randomUUID(), conversation_id: c.id, role: 'assistant', content: reply, created_at: now() };
        list.push(user, assistant);
        c.updated_at = assistant.created_at;
        return { user_message: user, assistant_message: assistant };
      };
      if (!(req.headers.accept ?? '').includes('text/event-stream')) return send(res, 201, store());
      const chosen = body.generation_id;
      if (chosen !== undefined && (typeof chosen !== 'string' || !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(chosen))) {
        return fail(res, 400, 'The generation id must be a UUID.', 'invalid_id');
      }
      if (chosen !== undefined && generations.has(chosen.toLowerCase())) {
        return fail(res, 409, 'A reply with this generation id exists already; choose a new id for every message.', 'generation_id_in_use');
      }
      const gen = { id: chosen?.toLowerCase() ?? randomUUID(), conversationId: c.id, events: [], finished: false, listeners: new Set() };
      generations.set(gen.id, gen);
      active.set(c.id, gen);
      emit(gen, 'start', { generation_id: gen.id, conversation_id: c.id, content: body.content });
      follow(res, gen, 0);
      // Like the real server: the reply goes on, and is stored, even if the client went away.
      const words = reply.split(/(?<=\s)(?=\S)/);
      let written = '';
      for (const [i, w] of words.entries()) {
        if (i > 0) await sleep(wordDelay);
        if (gen.stopRequested) break;
        written += w;
        emit(gen, 'delta', { text: w });
      }
      reply = written;
      emit(gen, 'done', store());
      return;
    }
  }
  if (p.startsWith('/api/')) return fail(res, 404, 'Not found.', 'not_found');
  if (dist && req.method === 'GET') {
    const file = p.startsWith('/assets/') ? path.join(dist, path.normalize(p).replace(/^(\.\.[/\\])+/, '')) : path.join(dist, 'index.html');
    try {
      const data = await readFile(file);
      const type = file.endsWith('.js') ? 'text/javascript' : file.endsWith('.css') ? 'text/css' : 'text/html; charset=utf-8';
      res.writeHead(200, {
        'Content-Type': type,
        // The same policy chat-server sends: the client must work without inline scripts.
        'Content-Security-Policy': "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'",
      });
      return res.end(data);
    } catch {
      return fail(res, 404, 'Not found.', 'not_found');
    }
  }
  return fail(res, 404, 'Not found.', 'not_found');
});

server.listen(port, '127.0.0.1', () => console.log(`mock chat-server on http://127.0.0.1:${port}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('SIGINT', () => server.close(() => process.exit(0)));
