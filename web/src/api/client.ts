import { SseParser } from './sse';
import type { Conversation, ErrorBody, Exchange, Message, Page } from './types';

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

/** The server could not be reached at all (network down, server stopped, proxy without upstream). */
export class NetworkError extends Error {
  constructor(message = 'Cannot reach the server.') {
    super(message);
    this.name = 'NetworkError';
  }
}

/** True when the error means "the server is not there", as opposed to "the server said no". */
export function isUnreachable(err: unknown): boolean {
  return err instanceof NetworkError;
}

export function isAbort(err: unknown): boolean {
  return err instanceof DOMException && err.name === 'AbortError';
}

export function errorMessage(err: unknown): string {
  if (err instanceof ApiError || err instanceof NetworkError) return err.message;
  if (err instanceof Error && err.message) return err.message;
  return 'Something went wrong.';
}

export interface StreamOptions {
  signal?: AbortSignal;
  /** Called with each piece of the reply as it arrives. */
  onDelta?: (text: string) => void;
}

type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export class ApiClient {
  private readonly baseUrl: string;
  private readonly fetchImpl: FetchLike;

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

  createConversation(title?: string): Promise<Conversation> {
    return this.json('POST', '/api/v1/conversations', title === undefined ? {} : { title });
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

  /**
   * Sends and streams the reply (Server-Sent Events). Resolves with the stored exchange from the
   * `done` event; rejects with ApiError on an error response or `error` event, with NetworkError
   * when the server cannot be reached, and with an AbortError when `signal` aborts.
   */
  async streamMessage(id: string, content: string, opts: StreamOptions = {}): Promise<Exchange> {
    const res = await this.request('POST', `/api/v1/conversations/${enc(id)}/messages`, { content }, {
      accept: 'text/event-stream',
      signal: opts.signal,
    });
    const type = res.headers.get('content-type') ?? '';
    if (!type.includes('text/event-stream')) {
      // A server that ignores Accept answers with the plain JSON exchange.
      const exchange = (await res.json()) as Exchange;
      opts.onDelta?.(exchange.assistant_message.content);
      return exchange;
    }
    if (!res.body) throw new ApiError(res.status, 'The reply stream was empty.', 'stream_incomplete');

    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser();
    let done: Exchange | undefined;
    const handle = (events: ReturnType<SseParser['push']>) => {
      for (const ev of events) {
        if (ev.event === 'delta') {
          const { text } = JSON.parse(ev.data) as { text: string };
          if (text) opts.onDelta?.(text);
        } else if (ev.event === 'done') {
          done = JSON.parse(ev.data) as Exchange;
        } else if (ev.event === 'error') {
          const body = safeParse(ev.data) as Partial<ErrorBody> | undefined;
          throw new ApiError(res.status, body?.message || 'The assistant failed to reply.', body?.code || 'stream_error');
        }
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
    const res = await this.request(method, path, body);
    return (await res.json()) as T;
  }

  private async request(
    method: string,
    path: string,
    body?: unknown,
    extra: { accept?: string; signal?: AbortSignal | undefined } = {},
  ): Promise<Response> {
    const headers: Record<string, string> = { Accept: extra.accept ?? 'application/json' };
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

async function toApiError(res: Response): Promise<Error> {
  const retry = res.headers.get('retry-after');
  const retryAfter = retry !== null && /^\d+$/.test(retry) ? Number(retry) : undefined;
  let body: Partial<ErrorBody> | undefined;
  try {
    body = safeParse(await res.text()) as Partial<ErrorBody> | undefined;
  } catch {
    body = undefined;
  }
  if (body && typeof body.message === 'string') {
    return new ApiError(res.status, body.message, body.code ?? 'error', retryAfter);
  }
  // No JSON error body: not chat-server talking (e.g. the dev proxy answering 500 with the server down).
  if (res.status >= 500) return new NetworkError();
  return new ApiError(res.status, `The server answered ${res.status}.`, 'http_error', retryAfter);
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
