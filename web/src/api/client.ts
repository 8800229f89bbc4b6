import { SseParser } from './sse';
import type { Conversation, ErrorBody, Exchange, Limits, Message, Page } from './types';

/** An error the server answered with (`{"status":"error","message","code"}`), or a broken stream. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  /** Seconds from a `Retry-After` header, when the server sent one. */
  readonly retryAfter: number | undefined;

  constructor(status: number, message: string, code: string, retryAfter?: number) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** An `error` event in a reply stream: the server's own word on how the reply ended. */
export class ReplyStreamError extends ApiError {}

/**
 * The server said the reply failed, so nothing was stored. Not for an interruption (the reply goes
 * on and can be resumed) nor for a stream the client found broken (`not_a_stream`, a proxy's page).
 */
export function replyFailed(err: unknown): boolean {
  return err instanceof ReplyStreamError && err.code !== 'interrupted';
}

/** The server could not be reached at all (network down, server stopped, proxy without upstream). */
export class NetworkError extends Error {
  constructor(message = 'Cannot reach the server.') {
    super(message);
    this.name = 'NetworkError';
  }
}

/**
 * A proxy in front of the server gave up waiting for its answer (504, or Cloudflare's 524): the
 * request reached the server, which may have taken it. Out of reach for a retry, like any
 * NetworkError, but a message sent so may be stored, its reply too.
 */
export class GatewayTimeout extends NetworkError {
  constructor(status: number) {
    super(`A proxy in front of the server gave up waiting for its answer (${status}).`);
    this.name = 'GatewayTimeout';
  }
}

/**
 * A successful answer that is not JSON: something between (a captive portal's login page, a
 * proxy's notice) answered instead of chat-server, which was not reached.
 */
export class NotFromServer extends NetworkError {
  constructor() {
    super('The answer was not from chat-server (a proxy or a network login page may have answered instead).');
    this.name = 'NotFromServer';
  }
}

/** True when the error means "the server is not there", as opposed to "the server said no". */
export function isUnreachable(err: unknown): boolean {
  return err instanceof NetworkError;
}

/** The server has no such conversation (deleted, perhaps elsewhere); not any 404, such as a route a proxy lacks. */
export function isConversationGone(err: unknown): boolean {
  return err instanceof ApiError && err.code === 'conversation_not_found';
}

/** Refused an event stream: the client has as many open as the server allows it. */
export function isTooManyStreams(err: unknown): boolean {
  return err instanceof ApiError && err.code === 'too_many_streams';
}

/** A create under the id of a conversation deleted since: the server uses no id twice. */
export function isDeletedConversationId(err: unknown): boolean {
  return err instanceof ApiError && err.code === 'conversation_deleted';
}

/** A refusal of the moment (429, 503, both with Retry-After): the same request may succeed soon. */
export function isBusy(err: unknown): boolean {
  return err instanceof ApiError && (err.status === 429 || err.status === 503);
}

export function isAbort(err: unknown): boolean {
  return err instanceof DOMException && err.name === 'AbortError';
}

export function errorMessage(err: unknown): string {
  if (err instanceof ApiError || err instanceof NetworkError) return err.message;
  if (err instanceof Error && err.message) return err.message;
  return 'Something went wrong.';
}

/** The first event of every generation: which generation, and the user's message it answers. */
export interface StreamStart {
  generation_id: string;
  conversation_id: string;
  content: string;
}

export interface StreamOptions {
  signal?: AbortSignal;
  /**
   * The id the reply is to have (from `newGenerationId`), sent with the message so that the reply
   * can be stopped before its `start` event, while the model has not answered yet.
   */
  generationId?: string;
  /** Called with each piece of the reply as it arrives. */
  onDelta?: (text: string) => void;
  /**
   * Called on a `start` event, which only comes when following a generation from its first
   * event: whatever reply text was shown before belongs to the same reply and must be REPLACED.
   */
  onStart?: (start: StreamStart) => void;
  /** Called with the id (`<generation_id>:<sequence>`) of every event received. */
  onEventId?: (id: string) => void;
  /**
   * Called when the server answers a send with a stream: it has taken the message and stores
   * the exchange even if this connection is lost, so the text must not be offered for sending again.
   */
  onAccepted?: () => void;
  /** Called before each reconnection attempt after the connection was lost. */
  onReconnect?: (attempt: number) => void;
}

export interface FollowOptions extends StreamOptions {
  /** Resume after this event id; without it, follow the reply in progress from its start. */
  lastEventId?: string | null;
}

/** Where a stream got to: the last event id, so a dropped connection can resume after it. */
interface Cursor {
  lastId: string | null;
  generation: string | null;
  sequence: number;
}

/**
 * A UUID of `version` over random bytes, `fill` setting any of them first. Built from
 * `crypto.getRandomValues`, which pages served over plain HTTP from another host than localhost
 * have too (`crypto.randomUUID` is for secure contexts only).
 */
function newUuid(version: number, fill: (bytes: Uint8Array) => void = () => undefined): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  fill(bytes);
  bytes[6] = (bytes[6] & 0x0f) | (version << 4);
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A random (version 4) UUID for a reply's generation id. */
export function newGenerationId(): string {
  return newUuid(4);
}

/**
 * A version 7 UUID (the time in ms, then random bits) for a conversation this client creates, so
 * that it sorts by creation time like the ids the server makes.
 */
export function newConversationId(): string {
  return newUuid(7, (bytes) => {
    const ms = Date.now();
    for (let i = 0; i < 6; i += 1) bytes[i] = Math.floor(ms / 2 ** (8 * (5 - i))) % 256;
  });
}

/** `<generation_id>:<sequence>`, or null for anything else. */
export function parseEventId(id: string): { generation: string; sequence: number } | null {
  const m = /^(.+):(\d+)$/.exec(id);
  if (!m?.[1] || !m[2]) return null;
  return { generation: m[1], sequence: Number(m[2]) };
}

type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export class ApiClient {
  private readonly baseUrl: string;
  private readonly fetchImpl: FetchLike;
  /** Pauses before each reconnection after a stream was cut; their number is the number of attempts. */
  retryDelaysMs: number[] = [500, 1000, 2000, 4000];

  /**
   * @param baseUrl origin (and optional path prefix) of chat-server; "" means same origin.
   * @param fetchImpl injectable for tests; defaults to the global fetch, looked up per call.
   */
  constructor(baseUrl = '', fetchImpl?: FetchLike) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.fetchImpl = fetchImpl ?? ((input, init) => globalThis.fetch(input, init));
  }

  listConversations(opts: { limit?: number; cursor?: string | null } = {}): Promise<Page<Conversation>> {
    return this.json('GET', `/api/v1/conversations${query({ limit: opts.limit, cursor: opts.cursor })}`);
  }

  /**
   * With `id` (from `newConversationId`) the create may be sent again after its answer was lost:
   * the server answers a conversation that has the id already as it is, making no second one.
   */
  createConversation(options: { id?: string; title?: string } = {}): Promise<Conversation> {
    return this.json('POST', '/api/v1/conversations', options);
  }

  getConversation(id: string): Promise<Conversation> {
    return this.json('GET', `/api/v1/conversations/${enc(id)}`);
  }

  renameConversation(id: string, title: string): Promise<Conversation> {
    return this.json('PATCH', `/api/v1/conversations/${enc(id)}`, { title });
  }

  async deleteConversation(id: string): Promise<void> {
    await this.request('DELETE', `/api/v1/conversations/${enc(id)}`);
  }

  /** Newest page without `before`; items are oldest first within the page. */
  listMessages(id: string, opts: { limit?: number; before?: string | null } = {}): Promise<Page<Message>> {
    return this.json('GET', `/api/v1/conversations/${enc(id)}/messages${query({ limit: opts.limit, before: opts.before })}`);
  }

  /** Sends without streaming; resolves once the reply is stored. */
  sendMessage(id: string, content: string): Promise<Exchange> {
    return this.json('POST', `/api/v1/conversations/${enc(id)}/messages`, { content });
  }

  /** The server's limits on what is sent, to check a text before sending it. */
  limits(): Promise<Limits> {
    return this.json('GET', '/api/v1/limits');
  }

  /**
   * Stops reply `generation` (from its events' ids) of conversation `id` where it got to: the
   * server stores that much, and the reply's stream ends with it. Resolves once it has ended
   * (`stopped`, or `finished` before), or with `stopping` when it had not ended after 5 s.
   */
  async stopReply(id: string, generation: string): Promise<'stopped' | 'finished' | 'stopping'> {
    const answer = await this.json<{ status: 'stopped' | 'finished' | 'stopping' }>(
      'POST',
      `/api/v1/conversations/${enc(id)}/generations/${enc(generation)}/stop`,
    );
    return answer.status;
  }

  /**
   * Sends and streams the reply (Server-Sent Events). Resolves with the stored exchange from the
   * `done` event; rejects with ApiError on an error response or `error` event, with NetworkError
   * when the server cannot be reached, and with an AbortError when `signal` aborts. When the
   * connection drops after the first event, it resumes with `Last-Event-ID` (see followStream);
   * if the server then has nothing more to send, rejects with ApiError code `stream_gone`.
   */
  async streamMessage(id: string, content: string, opts: StreamOptions = {}): Promise<Exchange> {
    const body = opts.generationId === undefined ? { content } : { content, generation_id: opts.generationId };
    const res = await this.request('POST', `/api/v1/conversations/${enc(id)}/messages`, body, {
      accept: 'text/event-stream',
      signal: opts.signal,
    });
    const type = res.headers.get('content-type') ?? '';
    if (!type.includes('text/event-stream')) {
      // A server that ignores Accept answers with the plain JSON exchange.
      const exchange = await readJson<Exchange>(res);
      opts.onDelta?.(exchange.assistant_message.content);
      return exchange;
    }
    opts.onAccepted?.();
    const cursor: Cursor = { lastId: null, generation: null, sequence: 0 };
    try {
      return await this.readStream(res, cursor, opts);
    } catch (err) {
      // Without an event id there is nothing to resume after: following "the reply in progress"
      // could pick up another tab's.
      if (cursor.lastId === null || !retryable(err)) throw err;
      const exchange = await this.follow(id, cursor, opts, true);
      if (exchange) return exchange;
      throw new ApiError(204, 'The reply finished while the connection was down.', 'stream_gone');
    }
  }

  /**
   * Follows a reply being generated in conversation `id` (`GET .../stream`): from its first event
   * (`start`, then every delta so far, then live ones) or, with `lastEventId`, from after that
   * event. Resolves with the exchange of the `done` event, or null when there is nothing to
   * follow (204). A lost connection is retried with `Last-Event-ID` = the last event received.
   */
  followStream(id: string, opts: FollowOptions = {}): Promise<Exchange | null> {
    const cursor: Cursor = { lastId: null, generation: null, sequence: 0 };
    if (opts.lastEventId) {
      cursor.lastId = opts.lastEventId;
      const parsed = parseEventId(opts.lastEventId);
      if (parsed) {
        cursor.generation = parsed.generation;
        cursor.sequence = parsed.sequence;
      }
    }
    return this.follow(id, cursor, opts, false);
  }

  private async follow(id: string, cursor: Cursor, opts: StreamOptions, reconnecting: boolean): Promise<Exchange | null> {
    let failures = 0;
    let wait = reconnecting;
    for (;;) {
      if (wait) {
        const delay = this.retryDelaysMs[failures];
        if (delay === undefined) throw new NetworkError('The connection was lost while the reply was streaming.');
        failures += 1;
        opts.onReconnect?.(failures);
        await sleep(delay, opts.signal);
      }
      wait = true;
      const before = cursor.lastId;
      try {
        const headers: Record<string, string> = {};
        if (cursor.lastId !== null) headers['Last-Event-ID'] = cursor.lastId;
        const res = await this.request('GET', `/api/v1/conversations/${enc(id)}/stream`, undefined, {
          accept: 'text/event-stream',
          signal: opts.signal,
          headers,
        });
        if (res.status === 204) return null;
        if (!(res.headers.get('content-type') ?? '').includes('text/event-stream')) {
          throw new ApiError(res.status, 'The server did not answer with a stream.', 'not_a_stream');
        }
        return await this.readStream(res, cursor, opts);
      } catch (err) {
        if (!retryable(err)) throw err;
        // Progress since the last attempt earns a fresh set of retries.
        if (cursor.lastId !== before) failures = 0;
      }
    }
  }

  /** Reads one SSE response to its `done` event, advancing `cursor` past every event seen. */
  private async readStream(res: Response, cursor: Cursor, opts: StreamOptions): Promise<Exchange> {
    if (!res.body) throw new ApiError(res.status, 'The reply stream was empty.', 'stream_incomplete');
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser();
    let done: Exchange | undefined;
    const handle = (events: ReturnType<SseParser['push']>) => {
      for (const ev of events) {
        if (ev.event === 'error') {
          // Checked before the id: an `interrupted` event has none of its own, and the parser
          // repeats the previous one, which would make it look like a replayed event.
          const body = safeParse(ev.data) as Partial<ErrorBody> | undefined;
          throw new ReplyStreamError(res.status, body?.message || 'The assistant failed to reply.', body?.code || 'stream_error');
        }
        if (ev.id !== undefined) {
          const parsed = parseEventId(ev.id);
          if (parsed) {
            // A replay that overlaps what was already received: skip the events seen before.
            if (parsed.generation === cursor.generation && parsed.sequence <= cursor.sequence) continue;
            cursor.generation = parsed.generation;
            cursor.sequence = parsed.sequence;
          }
          if (ev.id !== cursor.lastId) {
            cursor.lastId = ev.id;
            opts.onEventId?.(ev.id);
          }
        }
        if (ev.event === 'start') {
          const start = safeParse(ev.data) as Partial<StreamStart> | undefined;
          opts.onStart?.({
            generation_id: start?.generation_id ?? '',
            conversation_id: start?.conversation_id ?? '',
            content: start?.content ?? '',
          });
        } else if (ev.event === 'delta') {
          const { text } = JSON.parse(ev.data) as { text: string };
          if (text) opts.onDelta?.(text);
        } else if (ev.event === 'done') {
          done = JSON.parse(ev.data) as Exchange;
        }
        // Unknown event names are ignored.
      }
    };
    try {
      for (;;) {
        const { value, done: finished } = await reader.read();
        if (finished) break;
        handle(parser.push(decoder.decode(value, { stream: true })));
        if (done) break;
      }
      if (!done) handle(parser.push(decoder.decode()).concat(parser.end()));
    } catch (err) {
      if (isAbort(err) || err instanceof ApiError) throw err;
      if (opts.signal?.aborted) throw new DOMException('Aborted', 'AbortError');
      throw new NetworkError('The connection was lost while the reply was streaming.');
    } finally {
      reader.cancel().catch(() => undefined);
    }
    if (!done) throw new ApiError(res.status, 'The reply stream ended before it was complete.', 'stream_incomplete');
    return done;
  }

  private async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    return readJson<T>(await this.request(method, path, body));
  }

  private async request(
    method: string,
    path: string,
    body?: unknown,
    extra: { accept?: string; signal?: AbortSignal | undefined; headers?: Record<string, string> } = {},
  ): Promise<Response> {
    const headers: Record<string, string> = { Accept: extra.accept ?? 'application/json', ...extra.headers };
    const init: RequestInit = { method, headers };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    if (extra.signal) init.signal = extra.signal;
    let res: Response;
    try {
      res = await this.fetchImpl(this.baseUrl + path, init);
    } catch (err) {
      if (isAbort(err)) throw err;
      throw new NetworkError();
    }
    if (!res.ok) throw await toApiError(res);
    return res;
  }
}

/** The JSON body of a successful answer; one that is not JSON is `NotFromServer`. */
async function readJson<T>(res: Response): Promise<T> {
  const text = await res.text();
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new NotFromServer();
  }
}

async function toApiError(res: Response): Promise<Error> {
  const retry = res.headers.get('retry-after');
  const retryAfter = retry !== null && /^\d+$/.test(retry) ? Number(retry) : undefined;
  let body: Partial<ErrorBody> | undefined;
  try {
    body = safeParse(await res.text()) as Partial<ErrorBody> | undefined;
  } catch {
    body = undefined;
  }
  // chat-server's errors always carry a code; a JSON 5xx without one is a proxy's (Kong, a cloud
  // gateway), which says nothing of whether the server took the request.
  if (body && typeof body.message === 'string' && (typeof body.code === 'string' || res.status < 500)) {
    return new ApiError(res.status, body.message, body.code ?? 'error', retryAfter);
  }
  // No JSON error body: not chat-server talking (e.g. the dev proxy answering 500 with the server down).
  if (res.status === 504 || res.status === 524) return new GatewayTimeout(res.status);
  if (res.status >= 500) return new NetworkError();
  return new ApiError(res.status, `The server answered ${res.status}.`, 'http_error', retryAfter);
}

/**
 * Worth another try: the connection broke, the stream was cut short or interrupted (the server
 * could not read the reply's log), or the server is restarting.
 */
function retryable(err: unknown): boolean {
  if (err instanceof NetworkError) return true;
  return err instanceof ApiError && (err.code === 'stream_incomplete' || err.code === 'interrupted' || err.status >= 500);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new DOMException('Aborted', 'AbortError'));
    const onAbort = () => {
      clearTimeout(timer);
      reject(new DOMException('Aborted', 'AbortError'));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function safeParse(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function enc(id: string): string {
  return encodeURIComponent(id);
}

function query(params: Record<string, string | number | null | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

export const api = new ApiClient((import.meta.env.VITE_API_BASE_URL as string | undefined) ?? '');
