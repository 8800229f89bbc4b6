import { describe, expect, it } from 'vitest';
import { ApiClient, ApiError, GatewayTimeout, NetworkError, NotFromServer, isUnreachable, newConversationId, newGenerationId } from '../src/api/client';
import { json, mockFetch, msg, sseResponse } from './helpers';

describe('ids chosen here', () => {
  const uuid = (version: number) => new RegExp(`^[0-9a-f]{8}-[0-9a-f]{4}-${version}[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`);

  it('are random version 4 UUIDs for replies', () => {
    const ids = Array.from({ length: 50 }, newGenerationId);
    for (const id of ids) expect(id).toMatch(uuid(4));
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('are version 7 UUIDs for conversations, led by the time in ms, so they sort as made', () => {
    const before = Date.now();
    const ids = Array.from({ length: 50 }, newConversationId);
    const after = Date.now();
    for (const id of ids) {
      expect(id).toMatch(uuid(7));
      const ms = parseInt(id.replace(/-/g, '').slice(0, 12), 16);
      expect(ms).toBeGreaterThanOrEqual(before);
      expect(ms).toBeLessThanOrEqual(after);
    }
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe('ApiClient', () => {
  it('builds URLs from the base URL and query parameters', async () => {
    const { fn, calls } = mockFetch([() => json({ items: [], next_cursor: null })]);
    const client = new ApiClient('http://api.example/', fn);
    await client.listMessages('c 1', { limit: 20, before: 'abc' });
    await client.listConversations();
    expect(calls.map((c) => c.url)).toEqual(['/api/v1/conversations/c%201/messages?limit=20&before=abc', '/api/v1/conversations']);
  });

  it('turns a JSON error body into an ApiError with status, code and Retry-After', async () => {
    const { fn } = mockFetch([() => json({ status: 'error', message: 'Slow down', code: 'rate_limited' }, 429, { 'Retry-After': '3' })]);
    const err = await new ApiClient('', fn).getConversation('x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 429, code: 'rate_limited', message: 'Slow down', retryAfter: 3 });
  });

  it('reports an unreachable server as NetworkError', async () => {
    const client = new ApiClient('', () => Promise.reject(new TypeError('Failed to fetch')));
    await expect(client.listConversations()).rejects.toBeInstanceOf(NetworkError);
    const proxy = new ApiClient('', async () => new Response('', { status: 500 }));
    await expect(proxy.listConversations()).rejects.toBeInstanceOf(NetworkError);
  });

  it('tells a proxy that gave up waiting (504, 524) from one that found no server', async () => {
    for (const status of [504, 524]) {
      const client = new ApiClient('', async () => new Response('<html>Gateway Time-out</html>', { status, headers: { 'Content-Type': 'text/html' } }));
      const err = await client.streamMessage('c1', 'hello').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(GatewayTimeout);
      expect(isUnreachable(err)).toBe(true);
      expect((err as Error).message).toBe(`A proxy in front of the server gave up waiting for its answer (${status}).`);
    }
    const noServer = new ApiClient('', async () => new Response('<html>Bad Gateway</html>', { status: 502 }));
    const err = await noServer.streamMessage('c1', 'hello').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetworkError);
    expect(err).not.toBeInstanceOf(GatewayTimeout);
  });

  it('says an answer that is not JSON came from something else, not what the parser said, and counts it as the server out of reach', async () => {
    const portal = new ApiClient('', async () => new Response('<html>Log in to the Wi-Fi</html>', { status: 200, headers: { 'Content-Type': 'text/html' } }));
    for (const call of [() => portal.listConversations(), () => portal.streamMessage('c1', 'hello')]) {
      const err = await call().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NotFromServer);
      expect(isUnreachable(err)).toBe(true);
      expect((err as Error).message).toBe('The answer was not from chat-server (a proxy or a network login page may have answered instead).');
    }
  });

  it('takes a JSON 504 without a code for a proxy\'s, not chat-server\'s', async () => {
    const gateway = new ApiClient('', async () => json({ message: 'The upstream server is timing out' }, 504));
    expect(await gateway.streamMessage('c1', 'hello').catch((e: unknown) => e)).toBeInstanceOf(GatewayTimeout);
    const refusal = new ApiClient('', async () => json({ status: 'error', message: 'Storage is unavailable.', code: 'storage_unavailable' }, 503));
    expect(await refusal.listConversations().catch((e: unknown) => e)).toMatchObject({ code: 'storage_unavailable' });
  });

  it('streams deltas split across chunks and resolves with the done event', async () => {
    const sse = sseResponse();
    const { fn, calls } = mockFetch([() => sse.response]);
    const deltas: string[] = [];
    const done = new ApiClient('', fn).streamMessage('c1', 'hello', { onDelta: (t) => deltas.push(t) });
    const user = msg('c1', 'user', 'hello');
    const assistant = msg('c1', 'assistant', 'Hi there!');
    const text =
      'event: delta\r\ndata: {"text":"Hi"}\r\n\r\n' +
      'id: 2\r\nevent: delta\r\ndata: {"text":" there!"}\r\n\r\n' +
      `event: done\r\ndata: ${JSON.stringify({ user_message: user, assistant_message: assistant })}\r\n\r\n`;
    for (let i = 0; i < text.length; i += 7) sse.send(text.slice(i, i + 7));
    sse.close();
    await expect(done).resolves.toEqual({ user_message: user, assistant_message: assistant });
    expect(deltas).toEqual(['Hi', ' there!']);
    expect(calls[0]).toMatchObject({ method: 'POST', url: '/api/v1/conversations/c1/messages', body: { content: 'hello' } });
  });

  it('keeps multi-byte characters split between chunks intact', async () => {
    const bytes = new TextEncoder().encode('event: delta\ndata: {"text":"héllo 👋"}\n\nevent: error\ndata: {"message":"m","code":"c"}\n\n');
    // Byte offsets inside each character: the second byte of é, and after each of 👋's first three.
    const accent = bytes.indexOf(0xc3);
    const wave = bytes.indexOf(0xf0);
    for (const mid of [accent + 1, wave + 1, wave + 2, wave + 3]) {
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(bytes.slice(0, mid));
          c.enqueue(bytes.slice(mid));
          c.close();
        },
      });
      const client = new ApiClient('', async () => new Response(stream, { headers: { 'Content-Type': 'text/event-stream' } }));
      const got: string[] = [];
      await expect(client.streamMessage('c1', 'x', { onDelta: (t) => got.push(t) })).rejects.toMatchObject({ code: 'c', message: 'm' });
      expect(got).toEqual(['héllo 👋']);
    }
  });

  it('rejects with the server message on an error event and when the stream ends without done', async () => {
    const sse = sseResponse();
    const client = new ApiClient('', mockFetch([() => sse.response]).fn);
    const p = client.streamMessage('c1', 'x');
    sse.send('event: error\ndata: {"message":"The model is down","code":"provider_unavailable"}\n\n');
    await expect(p).rejects.toMatchObject({ message: 'The model is down', code: 'provider_unavailable' });

    const cut = sseResponse();
    const p2 = new ApiClient('', mockFetch([() => cut.response]).fn).streamMessage('c1', 'x');
    cut.send('event: delta\ndata: {"text":"partial"}\n\n');
    cut.close();
    await expect(p2).rejects.toMatchObject({ code: 'stream_incomplete' });
  });

  it('rejects with AbortError when aborted mid-stream', async () => {
    const sse = sseResponse();
    const controller = new AbortController();
    const p = new ApiClient('', mockFetch([() => sse.response]).fn).streamMessage('c1', 'x', { signal: controller.signal });
    sse.send('event: delta\ndata: {"text":"a"}\n\n');
    await new Promise((r) => setTimeout(r, 10));
    controller.abort();
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
  });

  describe('resumable streams', () => {
    const G = 'aaaaaaaa-0000-4000-8000-000000000001';
    const ev = (seq: number, event: string, data: unknown) => `id: ${G}:${seq}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    const exchange = { user_message: msg('c1', 'user', 'hi'), assistant_message: msg('c1', 'assistant', 'Hello world') };

    /** A client whose send answers with `first` and whose resumes with `second`; `headers` records each resume's Last-Event-ID. */
    function sendThenResume() {
      const first = sseResponse();
      const second = sseResponse();
      const headers: (string | null)[] = [];
      const { fn, calls } = mockFetch([
        (url, init) => {
          if (url.pathname.endsWith('/messages')) return first.response;
          headers.push(new Headers(init.headers).get('Last-Event-ID'));
          return second.response;
        },
      ]);
      const client = new ApiClient('', fn);
      client.retryDelaysMs = [1, 1];
      return { client, first, second, headers, calls };
    }

    /** Ends the send's response after "Hello", then answers the resume with " world" and `done`. */
    async function closeThenResumeWithTheRest(first: ReturnType<typeof sseResponse>, second: ReturnType<typeof sseResponse>) {
      first.close();
      await new Promise((r) => setTimeout(r, 20));
      second.send(ev(3, 'delta', { text: ' world' }) + ev(4, 'done', exchange));
      second.close();
    }

    it('reconnects a dropped send with Last-Event-ID and skips events it already had', async () => {
      const { client, first, second, headers, calls } = sendThenResume();
      const deltas: string[] = [];
      const ids: string[] = [];
      const p = client.streamMessage('c1', 'hi', { onDelta: (t) => deltas.push(t), onEventId: (id) => ids.push(id) });
      first.send(ev(1, 'start', { generation_id: G, conversation_id: 'c1', content: 'hi' }) + ev(2, 'delta', { text: 'Hello' }));
      await new Promise((r) => setTimeout(r, 10));
      first.error(new TypeError('network error'));
      await new Promise((r) => setTimeout(r, 20));
      // An overlapping replay (sequence 2 again) must not show "Hello" twice; unknown events are ignored.
      second.send(ev(2, 'delta', { text: 'Hello' }) + ev(3, 'delta', { text: ' world' }) + ev(4, 'progress', { x: 1 }) + ev(5, 'done', exchange));
      second.close();
      await expect(p).resolves.toEqual(exchange);
      expect(deltas).toEqual(['Hello', ' world']);
      expect(headers).toEqual([`${G}:2`]);
      expect(calls.map((c) => `${c.method} ${c.url}`)).toEqual(['POST /api/v1/conversations/c1/messages', 'GET /api/v1/conversations/c1/stream']);
      expect(ids).toEqual([`${G}:1`, `${G}:2`, `${G}:3`, `${G}:4`, `${G}:5`]);
    });

    it('resumes from the last whole event when the connection closes inside one', async () => {
      const { client, first, second, headers } = sendThenResume();
      const deltas: string[] = [];
      const p = client.streamMessage('c1', 'hi', { onDelta: (t) => deltas.push(t) });
      first.send(ev(1, 'start', { generation_id: G, conversation_id: 'c1', content: 'hi' }) + ev(2, 'delta', { text: 'Hello' }));
      first.send(`id: ${G}:3\nevent: delta\ndata: {"text":" wor`);
      await closeThenResumeWithTheRest(first, second);
      await expect(p).resolves.toEqual(exchange);
      expect(deltas).toEqual(['Hello', ' world']);
      expect(headers).toEqual([`${G}:2`]);
    });

    it('resumes after an interrupted event, which carries no id of its own', async () => {
      const { client, first, second, headers } = sendThenResume();
      const deltas: string[] = [];
      let accepted = 0;
      const p = client.streamMessage('c1', 'hi', { onDelta: (t) => deltas.push(t), onAccepted: () => (accepted += 1) });
      first.send(
        ev(1, 'start', { generation_id: G, conversation_id: 'c1', content: 'hi' }) +
          ev(2, 'delta', { text: 'Hello' }) +
          'event: error\ndata: {"message":"The reply stream was interrupted; reconnect to resume it.","code":"interrupted"}\n\n',
      );
      await closeThenResumeWithTheRest(first, second);
      await expect(p).resolves.toEqual(exchange);
      expect(deltas).toEqual(['Hello', ' world']);
      expect(headers).toEqual([`${G}:2`]);
      expect(accepted).toBe(1);
    });

    it('does not resume an interruption before any event id: the reply in progress could be another', async () => {
      const { client, first, headers } = sendThenResume();
      let accepted = false;
      const p = client.streamMessage('c1', 'hi', { onAccepted: () => (accepted = true) });
      first.send('event: error\ndata: {"message":"interrupted","code":"interrupted"}\n\n');
      first.close();
      await expect(p).rejects.toMatchObject({ code: 'interrupted' });
      expect(accepted).toBe(true);
      expect(headers).toEqual([]);
    });

    it('follows a reply in progress from its start, and answers null on 204', async () => {
      const sse = sseResponse();
      let status = 200;
      const { fn } = mockFetch([(_url, init) => {
        expect(new Headers(init.headers).get('Last-Event-ID')).toBeNull();
        return status === 204 ? new Response(null, { status: 204 }) : sse.response;
      }]);
      const client = new ApiClient('', fn);
      const starts: string[] = [];
      const deltas: string[] = [];
      const p = client.followStream('c1', { onStart: (s) => starts.push(s.content), onDelta: (t) => deltas.push(t) });
      sse.send(ev(1, 'start', { generation_id: G, conversation_id: 'c1', content: 'hi' }) + ev(2, 'delta', { text: 'Hel' }) + ev(3, 'done', exchange));
      sse.close();
      await expect(p).resolves.toEqual(exchange);
      expect(starts).toEqual(['hi']);
      expect(deltas).toEqual(['Hel']);
      status = 204;
      await expect(client.followStream('c1')).resolves.toBeNull();
    });

    it('gives up after the retries with NetworkError, and does not retry a 404', async () => {
      let n = 0;
      const client = new ApiClient('', async () => {
        n += 1;
        throw new TypeError('Failed to fetch');
      });
      client.retryDelaysMs = [1, 1, 1];
      await expect(client.followStream('c1', { lastEventId: `${G}:3` })).rejects.toBeInstanceOf(NetworkError);
      expect(n).toBe(4);
      const { fn, calls } = mockFetch([() => json({ status: 'error', message: 'Conversation not found.', code: 'conversation_not_found' }, 404)]);
      await expect(new ApiClient('', fn).followStream('gone')).rejects.toMatchObject({ status: 404 });
      expect(calls).toHaveLength(1);
    });
  });
});
