import type { Conversation, Message } from '../src/api/types';

export const conv = (id: string, title: string, updated = '2026-01-01T00:00:00Z'): Conversation => ({
  id,
  title,
  created_at: '2026-01-01T00:00:00Z',
  updated_at: updated,
});

let seq = 0;
export const msg = (conversationId: string, role: 'user' | 'assistant', content: string): Message => ({
  id: `m${++seq}`,
  conversation_id: conversationId,
  role,
  content,
  created_at: `2026-01-02T00:00:${String(seq % 60).padStart(2, '0')}Z`,
});

export const json = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  new Response(status === 204 ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers },
  });

/** An SSE response whose chunks the test pushes one by one. */
export function sseResponse() {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
  });
  const encoder = new TextEncoder();
  return {
    response: new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } }),
    send(text: string) {
      controller.enqueue(encoder.encode(text));
    },
    close() {
      controller.close();
    },
    error(err: unknown) {
      controller.error(err);
    },
  };
}

export type Route = (url: URL, init: RequestInit) => Response | Promise<Response | undefined> | undefined;

/** A fetch that answers from `routes` (first one returning a Response wins) and records calls. */
export function mockFetch(routes: Route[]) {
  const calls: { method: string; url: string; body?: unknown }[] = [];
  const fn = async (input: string | URL | Request, init: RequestInit = {}) => {
    const url = new URL(String(input), 'http://localhost');
    const method = init.method ?? 'GET';
    calls.push({ method, url: url.pathname + url.search, body: init.body ? JSON.parse(String(init.body)) : undefined });
    if (init.signal?.aborted) throw new DOMException('Aborted', 'AbortError');
    for (const route of routes) {
      const res = await route(url, init);
      if (res) {
        if (init.signal) {
          const body = res.body;
          if (body) {
            // Make aborting the signal error the body stream, as a browser does.
            const reader = body.getReader();
            const signal = init.signal;
            const wrapped = new ReadableStream<Uint8Array>({
              start(c) {
                signal.addEventListener('abort', () => {
                  try {
                    c.error(new DOMException('Aborted', 'AbortError'));
                  } catch {
                    // already closed
                  }
                  reader.cancel().catch(() => undefined);
                });
              },
              async pull(c) {
                const { value, done } = await reader.read();
                if (done) c.close();
                else c.enqueue(value);
              },
            });
            return new Response(wrapped, { status: res.status, headers: res.headers });
          }
        }
        return res;
      }
    }
    return json({ status: 'error', message: `no route for ${method} ${url.pathname}`, code: 'not_found' }, 404);
  };
  return { fn, calls };
}
