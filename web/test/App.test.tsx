import { act, fireEvent, render, screen, waitFor, within } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { openChatCreatedAsPageWasLeft } from '../src/address';
import { App } from '../src/App';
import { api } from '../src/api/client';
import { keepChatToCreate, loadDraft, markSent, markTaken, restoreFirstSendsCutOff, saveDraft, sentHere } from '../src/drafts';
import type { Conversation, Message } from '../src/api/types';
import { conv, json, mockFetch, msg, sseResponse, type Route } from './helpers';

/** A tiny in-memory chat-server. `stream` decides how each streamed send answers. */
function fakeServer() {
  const conversations: Conversation[] = [conv('c1', 'Older chat', '2026-01-01T00:00:00Z'), conv('c2', 'Recent chat', '2026-01-03T00:00:00Z')];
  const messages: Record<string, Message[]> = { c1: [], c2: [msg('c2', 'user', 'Earlier question'), msg('c2', 'assistant', 'Earlier answer')] };
  let streamHandler: ((id: string, content: string, init: RequestInit) => Response | Promise<Response>) | null = null;
  /** As the server: a deleted conversation's id is not used again. */
  const deletedIds = new Set<string>();
  /** Answers GET .../stream; by default nothing is in progress (204). */
  let followHandler: (id: string, lastEventId: string | null, init: RequestInit) => Response | Promise<Response> = () => new Response(null, { status: 204 });
  const route: Route = (url, init) => {
    const method = init.method ?? 'GET';
    const path = url.pathname;
    const follow = /^\/api\/v1\/conversations\/([^/]+)\/stream$/.exec(path);
    if (follow?.[1] && method === 'GET') return followHandler(follow[1], new Headers(init.headers).get('Last-Event-ID'), init);
    if (path === '/api/v1/conversations' && method === 'GET') {
      return json({ items: [...conversations].sort((a, b) => b.updated_at.localeCompare(a.updated_at)), next_cursor: null });
    }
    if (path === '/api/v1/conversations' && method === 'POST') {
      const body = JSON.parse(String(init.body)) as { id?: string; title?: string };
      const existing = conversations.find((x) => x.id === body.id);
      if (existing) return json(existing, 200);
      if (body.id !== undefined && deletedIds.has(body.id)) {
        return json({ status: 'error', message: 'A conversation with this id was deleted.', code: 'conversation_deleted' }, 409);
      }
      // As the server makes it: created and updated at the same moment.
      const c = { ...conv(body.id ?? `n${conversations.length + 1}`, body.title ?? 'New chat', '2026-02-01T00:00:00Z'), created_at: '2026-02-01T00:00:00Z' };
      conversations.push(c);
      messages[c.id] = [];
      return json(c, 201);
    }
    const m = /^\/api\/v1\/conversations\/([^/]+)(\/messages)?$/.exec(path);
    if (!m?.[1]) return undefined;
    const id = m[1];
    const c = conversations.find((x) => x.id === id);
    if (!c) return json({ status: 'error', message: 'Conversation not found.', code: 'conversation_not_found' }, 404);
    if (!m[2] && method === 'GET') return json(c);
    if (m[2] && method === 'GET') return json({ items: messages[id] ?? [], next_cursor: null });
    if (m[2] && method === 'POST') {
      const content = (JSON.parse(String(init.body)) as { content: string }).content;
      if (streamHandler) return streamHandler(id, content, init);
      return undefined;
    }
    if (method === 'PATCH') {
      c.title = (JSON.parse(String(init.body)) as { title: string }).title;
      // As the server does: a rename is activity.
      c.updated_at = '2027-01-01T00:00:00Z';
      return json(c);
    }
    if (method === 'DELETE') {
      conversations.splice(conversations.indexOf(c), 1);
      deletedIds.add(id);
      return new Response(null, { status: 204 });
    }
    return undefined;
  };
  return {
    conversations,
    messages,
    route,
    onStream(h: (id: string, content: string, init: RequestInit) => Response | Promise<Response>) {
      streamHandler = h;
    },
    onFollow(h: (id: string, lastEventId: string | null, init: RequestInit) => Response | Promise<Response>) {
      followHandler = h;
    },
  };
}

let server: ReturnType<typeof fakeServer>;
let fetchMock: ReturnType<typeof mockFetch>;

beforeEach(() => {
  // Drafts outlive a render, as they outlive a reload: no test may find another's.
  sessionStorage.clear();
  server = fakeServer();
  fetchMock = mockFetch([server.route]);
  vi.stubGlobal('fetch', fetchMock.fn);
});
afterEach(() => {
  vi.unstubAllGlobals();
});

const composer = () => screen.getByRole('textbox', { name: 'Message' });

/** Runs `body` on fake timers that still follow the clock, and puts the real ones back after it. */
async function inFakeTime(body: () => Promise<void>) {
  vi.useFakeTimers({ shouldAdvanceTime: true });
  try {
    await body();
  } finally {
    vi.useRealTimers();
  }
}

/** Lets `ms` of fake time pass, running what it wakes inside act. */
const passTime = (ms: number) =>
  act(async () => {
    await vi.advanceTimersByTimeAsync(ms);
  });

/** Renames (PATCH) answered 503 while `refuses(attempt)` holds, counted; the rest as the fake server does. */
function refusingRenames(refuses: (attempt: number) => boolean) {
  const renames = { count: 0 };
  vi.stubGlobal(
    'fetch',
    mockFetch([
      (_url, init) => {
        if (init.method !== 'PATCH') return undefined;
        renames.count += 1;
        return refuses(renames.count) ? json({ status: 'error', message: 'Storage is unavailable.', code: 'storage_unavailable' }, 503) : undefined;
      },
      server.route,
    ]).fn,
  );
  return renames;
}

/** The fake server behind a fetch whose first read of the recent chat's messages fails (503). */
function failingFirstPageOfRecentChat() {
  let pageFailures = 1;
  return mockFetch([
    (url, init) => {
      if (init.method === 'GET' && url.pathname === '/api/v1/conversations/c2/messages' && pageFailures > 0) {
        pageFailures -= 1;
        return json({ status: 'error', message: 'Storage is unavailable.', code: 'storage_unavailable' }, 503);
      }
      return undefined;
    },
    server.route,
  ]);
}

/** The conversation list is read as the request comes and answered only when the returned function is called. */
function holdConversationList(): () => void {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  vi.stubGlobal(
    'fetch',
    mockFetch([
      async (url, init) => {
        if (url.pathname === '/api/v1/conversations' && (init.method ?? 'GET') === 'GET') {
          const res = await server.route(url, init);
          await gate;
          return res;
        }
        return undefined;
      },
      server.route,
    ]).fn,
  );
  return release;
}

async function renderLoaded() {
  render(<App />);
  await screen.findByText('Earlier answer');
}

/** Ends `stream` with the exchange of `text` in the conversation created last, stored on the server. */
async function finishInNewestChat(stream: ReturnType<typeof sseResponse>, text: string, reply = 'Noted.') {
  const id = server.conversations.at(-1)?.id ?? '';
  await waitFor(() => expect(server.messages[id]).toBeDefined());
  await storeAndFinishIn(id, stream, text, reply);
}

/** Stores the exchange of `text` in conversation `id` on the server, then ends `stream` with it. */
async function storeAndFinishIn(id: string, stream: ReturnType<typeof sseResponse>, text: string, reply: string) {
  const exchange = { user_message: msg(id, 'user', text), assistant_message: msg(id, 'assistant', reply) };
  server.messages[id]?.push(exchange.user_message, exchange.assistant_message);
  await act(async () => {
    stream.send(`event: done\ndata: ${JSON.stringify(exchange)}\n\n`);
    stream.close();
  });
}

/** What the reply cut short in view says of itself: stopped by the user, or its connection lost. */
const cutShortNote = () => screen.getByRole('log').querySelector('article[aria-label="Assistant"] .message-note')?.textContent;

/**
 * Clicks the button named `name` inside `container` as soon as it is in the DOM: in the mutation
 * observer's callback, before React has run the passive effects of the render that added it.
 */
function clickTheMomentItShows(container: HTMLElement, name: string, { focus = false } = {}) {
  return new Promise<void>((clicked) => {
    const observer = new MutationObserver(() => {
      const button = within(container).queryByRole('button', { name });
      if (!button) return;
      observer.disconnect();
      if (focus) button.focus();
      fireEvent.click(button);
      clicked();
    });
    observer.observe(container, { childList: true, subtree: true });
  });
}

/**
 * The older chat opened by its link while the list's first page holds only the recent one: it is
 * fetched on its own, and listed once its title shows.
 */
async function renderOlderChatBeyondTheListsPage() {
  vi.stubGlobal(
    'fetch',
    mockFetch([
      (url, init) =>
        url.pathname === '/api/v1/conversations' && (init.method ?? 'GET') === 'GET' && !url.searchParams.has('cursor')
          ? json({ items: server.conversations.filter((c) => c.id === 'c2'), next_cursor: 'after-c2' })
          : undefined,
      server.route,
    ]).fn,
  );
  history.replaceState(null, '', '/#/c/c1');
  render(<App />);
  await screen.findByText('No messages yet');
  await screen.findByRole('heading', { name: 'Older chat' });
}

/** Clicks New chat and waits for its empty message box; nothing is created on the server yet. */
async function openNewChat() {
  // The action comes first: a conversation not named yet is called "New chat" too.
  const [action] = within(screen.getByRole('navigation', { name: 'Conversations' })).getAllByRole('button', { name: 'New chat' });
  if (action) fireEvent.click(action);
  await screen.findByText('Start a new conversation');
}

describe('App', () => {
  it('lists conversations most recent first in a nav landmark and opens the newest', async () => {
    await renderLoaded();
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    const titles = within(nav)
      .getAllByRole('listitem')
      .map((li) => li.textContent);
    expect(titles).toEqual(['Recent chat', 'Older chat']);
    expect(within(nav).getByRole('button', { name: 'Recent chat' }).getAttribute('aria-current')).toBe('page');
    const log = screen.getByRole('log');
    expect(log.getAttribute('aria-live')).toBe('off');
    expect(within(log).getByText('Earlier question')).toBeTruthy();
    expect(screen.getByTestId('reply-announcer').textContent).toBe('');
    expect(within(nav).getByRole('button', { name: /New chat/ })).toBeTruthy();
  });

  it('shows a loading state, then an empty conversation state', async () => {
    render(<App />);
    expect(screen.getByText('Loading conversations…')).toBeTruthy();
    await screen.findByText('Earlier answer');
    fireEvent.click(screen.getByRole('button', { name: 'Older chat' }));
    expect(await screen.findByText('No messages yet')).toBeTruthy();
  });

  it('disables Send while the message is empty or blank', async () => {
    await renderLoaded();
    const send = screen.getByRole('button', { name: 'Send' }) as HTMLButtonElement;
    expect(send.disabled).toBe(true);
    fireEvent.change(composer(), { target: { value: '   ' } });
    expect(send.disabled).toBe(true);
    fireEvent.change(composer(), { target: { value: 'hi' } });
    expect(send.disabled).toBe(false);
  });

  it('counts the characters near the server\'s limit and holds back a message over it', async () => {
    const limited = mockFetch([
      (url) => (url.pathname === '/api/v1/limits' ? json({ max_message_chars: 10, max_title_chars: 200 }) : undefined),
      server.route,
    ]);
    vi.stubGlobal('fetch', limited.fn);
    await renderLoaded();
    const send = screen.getByRole('button', { name: 'Send' }) as HTMLButtonElement;
    fireEvent.change(composer(), { target: { value: 'short' } });
    expect(screen.queryByText(/characters/)).toBeNull();
    // Counted from 9 characters (90 %) on, as the server counts them: 5 emoji are 10 UTF-16 units.
    fireEvent.change(composer(), { target: { value: '😀😀😀😀😀' } });
    expect(screen.queryByText(/characters/)).toBeNull();
    // An emoji is one character, as the server counts them (code points).
    await waitFor(() => {
      fireEvent.change(composer(), { target: { value: 'nine 😀 ok' } });
      expect(screen.getByText('9 / 10 characters')).toBeTruthy();
    });
    expect(send.disabled).toBe(false);
    expect(screen.queryByText(/Too long to send/)).toBeNull();

    fireEvent.change(composer(), { target: { value: 'eleven char' } });
    expect(screen.getByText('11 / 10 characters · too long to send')).toBeTruthy();
    expect(composer().getAttribute('aria-invalid')).toBe('true');
    expect(send.disabled).toBe(true);
    expect(screen.getByText('Too long to send: the limit is 10 characters.')).toBeTruthy();
    fireEvent.keyDown(composer(), { key: 'Enter' });
    expect(limited.calls.some((c) => c.method === 'POST' && c.url.endsWith('/messages'))).toBe(false);
    expect((composer() as HTMLTextAreaElement).value).toBe('eleven char');
  });

  it('sends a long message as before while the server\'s limits are unknown', async () => {
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'x'.repeat(20_000) } });
    expect(screen.queryByText(/characters/)).toBeNull();
    expect((screen.getByRole('button', { name: 'Send' }) as HTMLButtonElement).disabled).toBe(false);
  });

  it('streams the reply: Stop while streaming, deltas appended, then the stored messages', async () => {
    const sse = sseResponse();
    server.onStream(() => sse.response);
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Hello **there**' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });

    const log = screen.getByRole('log');
    expect(await within(log).findByText('there')).toBeTruthy();
    expect((composer() as HTMLTextAreaElement).value).toBe('');
    const stop = await screen.findByRole('button', { name: 'Stop' });
    expect(stop).toBeTruthy();
    expect(screen.queryByRole('button', { name: 'Send' })).toBeNull();

    await act(async () => sse.send('event: delta\ndata: {"text":"Hi"}\n\n'));
    expect(await within(log).findByText('Hi')).toBeTruthy();
    await act(async () => sse.send('event: delta\ndata: {"text":" there, friend."}\n\n'));
    expect(await within(log).findByText('Hi there, friend.')).toBeTruthy();

    const done = { user_message: msg('c2', 'user', 'Hello **there**'), assistant_message: msg('c2', 'assistant', 'Hi there, friend.') };
    await act(async () => {
      sse.send(`event: done\ndata: ${JSON.stringify(done)}\n\n`);
      sse.close();
    });
    await waitFor(() => expect(screen.queryByRole('button', { name: 'Stop' })).toBeNull());
    expect(screen.getByRole('button', { name: 'Send' })).toBeTruthy();
    expect(within(log).getAllByText('Hi there, friend.')).toHaveLength(1);
    const announcer = screen.getByTestId('reply-announcer');
    expect(announcer.getAttribute('role')).toBe('status');
    expect(announcer.textContent).toBe('Assistant: Hi there, friend.');
    expect(fetchMock.calls.find((c) => c.method === 'POST')?.body).toEqual({ content: 'Hello **there**', generation_id: expect.any(String) });
  });

  it('adds a line on Shift+Enter instead of sending', async () => {
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'line one' } });
    fireEvent.keyDown(composer(), { key: 'Enter', shiftKey: true });
    expect(fetchMock.calls.some((c) => c.method === 'POST')).toBe(false);
  });

  it('keeps the typed text in the composer and shows the error when sending fails', async () => {
    server.onStream(() => json({ status: 'error', message: 'The assistant is busy.', code: 'overloaded' }, 503, { 'Retry-After': '2' }));
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Please keep me' } });
    fireEvent.click(screen.getByRole('button', { name: 'Send' }));
    const alert = await screen.findByRole('alert');
    expect(alert.textContent).toContain('The assistant is busy.');
    expect(alert.textContent).toContain('Try again in 2 s.');
    expect((composer() as HTMLTextAreaElement).value).toBe('Please keep me');
    expect(within(screen.getByRole('log')).queryByText('Please keep me')).toBeNull();
    expect(screen.getByRole('button', { name: 'Send' })).toBeTruthy();
  });

  it('does not say "try again" twice when the server\'s sentence says it already', async () => {
    server.onStream(() =>
      json({ status: 'error', message: 'Storage is unavailable; try again shortly.', code: 'storage_unavailable' }, 503, { 'Retry-After': '1' }),
    );
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Once' } });
    fireEvent.click(screen.getByRole('button', { name: 'Send' }));
    const alert = await screen.findByRole('alert');
    expect(alert.textContent).toBe('Sending failed: Storage is unavailable; try again shortly. Your message is back in the message box.');
  });

  it('keeps the text when the server cannot be reached while sending', async () => {
    server.onStream(() => Promise.reject(new TypeError('Failed to fetch')));
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Unsent words' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    expect((await screen.findByRole('alert')).textContent).toContain('Cannot reach the server');
    expect((composer() as HTMLTextAreaElement).value).toBe('Unsent words');
  });

  it('shows "server unreachable" with a Retry button that recovers', async () => {
    let down = true;
    vi.stubGlobal('fetch', (input: string, init?: RequestInit) => (down ? Promise.reject(new TypeError('Failed to fetch')) : fetchMock.fn(input, init)));
    render(<App />);
    expect(await screen.findByText('Cannot reach the server.')).toBeTruthy();
    down = false;
    fireEvent.click(screen.getByRole('button', { name: 'Retry' }));
    expect(await screen.findByText('Earlier answer')).toBeTruthy();
  });

  it('recovers by itself once the server is back, without Retry being pressed', () =>
    inFakeTime(async () => {
      let down = true;
      vi.stubGlobal('fetch', (input: string, init?: RequestInit) => (down ? Promise.reject(new TypeError('Failed to fetch')) : fetchMock.fn(input, init)));
      render(<App />);
      expect(await screen.findByText('Cannot reach the server.')).toBeTruthy();
      await passTime(2500);
      expect(screen.getByText('Cannot reach the server.')).toBeTruthy();
      down = false;
      // The next tries wait longer: 5 s after the second failure.
      await passTime(5500);
      expect(await screen.findByText('Earlier answer')).toBeTruthy();
      const nav = screen.getByRole('navigation', { name: 'Conversations' });
      expect(within(nav).getByRole('button', { name: 'Older chat' })).toBeTruthy();
    }));

  it('a conversation that could not be loaded says it is tried again, and loads by itself once the server answers', () =>
    inFakeTime(async () => {
      await renderLoaded();
      let down = true;
      server.messages.c1 = [msg('c1', 'user', 'Old question'), msg('c1', 'assistant', 'Old answer')];
      vi.stubGlobal('fetch', (input: string, init?: RequestInit) => (down ? Promise.reject(new TypeError('Failed to fetch')) : fetchMock.fn(input, init)));
      const nav = screen.getByRole('navigation', { name: 'Conversations' });
      fireEvent.click(within(nav).getByRole('button', { name: 'Older chat' }));
      const log = screen.getByRole('log');
      expect(await within(log).findByText('Cannot reach the server.')).toBeTruthy();
      expect(within(log).getByText('Trying again by itself.')).toBeTruthy();
      down = false;
      await passTime(2500);
      expect(await within(log).findByText('Old answer')).toBeTruthy();
    }));

  it('a list that failed to load says so in the sidebar, even once a new chat is there, and Retry brings it', async () => {
    let down = true;
    vi.stubGlobal('fetch', (input: string, init?: RequestInit) =>
      down && (init?.method ?? 'GET') === 'GET' ? Promise.reject(new TypeError('Failed to fetch')) : fetchMock.fn(input, init),
    );
    render(<App />);
    expect(await screen.findByText('Cannot reach the server.')).toBeTruthy();
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    expect(within(nav).queryByText('No conversations yet.')).toBeNull();
    // Choosing a new chat trades the page's error for the message box: the server may take a send.
    await openNewChat();
    const done = sseResponse();
    server.onStream(() => done.response);
    fireEvent.change(composer(), { target: { value: 'Sent while the list is down' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await finishInNewestChat(done, 'Sent while the list is down');
    expect(await within(nav).findByRole('list')).toBeTruthy();
    expect(within(nav).getByText(/Could not load your conversations/)).toBeTruthy();
    down = false;
    fireEvent.click(within(nav).getByRole('button', { name: 'Retry loading conversations' }));
    expect(await within(nav).findByRole('button', { name: 'Recent chat' })).toBeTruthy();
    expect(within(nav).queryByText(/Could not load your conversations/)).toBeNull();
  });

  /** The list of conversations, answered once `arrive` is called. */
  function slowList() {
    let arrive: () => void = () => undefined;
    const listed = new Promise<void>((resolve) => (arrive = resolve));
    const route: Route = async (url, init) => {
      if (url.pathname !== '/api/v1/conversations' || (init.method ?? 'GET') !== 'GET') return undefined;
      await listed;
      return server.route(url, init);
    };
    return { route, arrive: () => arrive() };
  }

  it('text typed in a new chat while the list loads stays there when the list arrives', async () => {
    const { route, arrive } = slowList();
    vi.stubGlobal('fetch', mockFetch([route, server.route]).fn);
    render(<App />);
    await screen.findByText('Start a new conversation');
    fireEvent.change(composer(), { target: { value: 'Typed early' } });
    await act(async () => arrive());
    expect(await screen.findByRole('button', { name: 'Recent chat' })).toBeTruthy();
    expect(screen.getByText('Start a new conversation')).toBeTruthy();
    expect((composer() as HTMLTextAreaElement).value).toBe('Typed early');
  });

  it('a message sent from a new chat while the list loads is not cut by the list arriving', async () => {
    const list = slowList();
    const creation = slowCreation();
    const sse = sseResponse();
    server.onStream(() => sse.response);
    vi.stubGlobal('fetch', mockFetch([list.route, creation.route, server.route]).fn);
    render(<App />);
    await screen.findByText('Start a new conversation');
    fireEvent.change(composer(), { target: { value: 'Sent early' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await act(async () => list.arrive());
    expect(await screen.findByRole('button', { name: 'Recent chat' })).toBeTruthy();
    await act(async () => creation.release());
    await act(async () => sse.send('event: delta\ndata: {"text":"Answered here"}\n\n'));
    const log = screen.getByRole('log');
    expect(await within(log).findByText('Answered here')).toBeTruthy();
    expect(within(log).getByText('Sent early')).toBeTruthy();
  });

  it('Stop aborts the stream and reloads the stored reply a moment later', async () => {
    const sse = sseResponse();
    server.onStream(() => sse.response);
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Tell me a story' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await act(async () => sse.send('event: delta\ndata: {"text":"Once upon"}\n\n'));
    expect(await screen.findByText('Once upon')).toBeTruthy();
    // The server finishes on its own and stores the exchange.
    server.messages.c2?.push(msg('c2', 'user', 'Tell me a story'), msg('c2', 'assistant', 'Once upon a time, the end.'));
    fireEvent.click(screen.getByRole('button', { name: 'Stop' }));
    expect(await screen.findByRole('button', { name: 'Send' })).toBeTruthy();
    expect(await screen.findByText(/Stopped/)).toBeTruthy();
    expect(await within(screen.getByRole('log')).findByText('Once upon a time, the end.', {}, { timeout: 4000 })).toBeTruthy();
    expect(screen.queryByText(/Stopped/)).toBeNull();
    expect(screen.getByTestId('reply-announcer').textContent).toBe('Assistant: Once upon a time, the end.');
  });

  it('a stopped reply whose chat is deleted before it is stored says so, and gives the message back', () =>
    inFakeTime(async () => {
      const sse = sseResponse();
      server.onStream(() => sse.response);
      await renderLoaded();
      fireEvent.change(composer(), { target: { value: 'Deleted after Stop' } });
      fireEvent.keyDown(composer(), { key: 'Enter' });
      await act(async () => sse.send('event: delta\ndata: {"text":"Once upon"}\n\n'));
      expect(await screen.findByText('Once upon')).toBeTruthy();
      // Deleted in another tab: the server ends the reply and stores nothing.
      server.conversations.splice(server.conversations.findIndex((c) => c.id === 'c2'), 1);
      fireEvent.click(screen.getByRole('button', { name: 'Stop' }));
      await passTime(10_000);
      expect(screen.getAllByRole('alert').map((a) => a.textContent)).toContain(
        'This conversation was deleted, perhaps in another tab. Your message is back in the message box: send it again to start a new chat with it.',
      );
      expect((composer() as HTMLTextAreaElement).value).toBe('Deleted after Stop');
      expect(within(screen.getByRole('navigation', { name: 'Conversations' })).queryByRole('button', { name: 'Recent chat' })).toBeNull();
    }));

  describe('Stop while the model has not answered', () => {
    /**
     * The send waits until a stop answers it `stopped`; the stop answers as `stopAnswer` says (given
     * how many stops came before it), and one answered 503 stops nothing.
     */
    function stoppableSend(stopAnswer: (earlier: number) => Response) {
      const seen = { generation: undefined as string | undefined, stops: [] as string[], sends: 0 };
      let answerSend!: (res: Response) => void;
      server.onStream((_id, _content, init) => {
        seen.sends += 1;
        seen.generation = (JSON.parse(String(init.body)) as { generation_id?: string }).generation_id;
        return new Promise<Response>((resolve) => {
          answerSend = resolve;
        });
      });
      const stopRoute: Route = (url, init) => {
        const stop = /^\/api\/v1\/conversations\/c2\/generations\/([^/]+)\/stop$/.exec(url.pathname);
        if (!stop?.[1] || init.method !== 'POST') return undefined;
        const answer = stopAnswer(seen.stops.length);
        seen.stops.push(stop[1]);
        // As the server does: the waiting send is answered `stopped`, nothing stored.
        if (answer.status !== 503) {
          setTimeout(() => answerSend(json({ status: 'error', message: 'The reply was stopped before it began; nothing was stored.', code: 'stopped' }, 409)), 20);
        }
        return answer;
      };
      vi.stubGlobal('fetch', mockFetch([stopRoute, server.route]).fn);
      return seen;
    }

    for (const [when, stopAnswer] of [
      ['stops the reply on the server', () => json({ status: 'stopped' })],
      ['stops it even when the stop overtakes the message', () => json({ status: 'error', message: 'No reply of this conversation with this generation id is known.', code: 'generation_not_found' }, 404)],
      ['stops it when another replica waits for its model', () => json({ status: 'stopping' }, 202)],
    ] as const) {
      it(`${when}: nothing is stored, and the message is back`, async () => {
        const seen = stoppableSend(stopAnswer);
        await renderLoaded();
        fireEvent.change(composer(), { target: { value: 'Never mind' } });
        fireEvent.keyDown(composer(), { key: 'Enter' });
        fireEvent.click(await screen.findByRole('button', { name: 'Stop' }));
        expect(await screen.findByText('Stopped before the reply began. Nothing was stored. Your message is back in the message box.')).toBeTruthy();
        expect(seen.generation).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
        expect(seen.stops).toEqual([seen.generation]);
        expect((composer() as HTMLTextAreaElement).value).toBe('Never mind');
        expect(within(screen.getByRole('log')).queryByText('Never mind')).toBeNull();
      });
    }

    /** Sends `text` in the open chat; gives the Stop that shows while it waits for the model. */
    const sendWaiting = async (text: string) => {
      fireEvent.change(composer(), { target: { value: text } });
      fireEvent.keyDown(composer(), { key: 'Enter' });
      return screen.findByRole('button', { name: 'Stop' });
    };
    /** A stop refused for the moment: the generation log is out of reach. */
    const unavailable = () => json({ status: 'error', message: 'The generation log is unavailable.', code: 'unavailable' }, 503);

    it('left and come back to, the message shows with Stop, which stops it', async () => {
      const seen = stoppableSend(() => json({ status: 'stopped' }));
      await renderLoaded();
      await sendWaiting('Wait for me');
      fireEvent.click(screen.getByRole('button', { name: 'Older chat' }));
      await screen.findByText('No messages yet');
      expect(within(screen.getByRole('log')).queryByText('Wait for me')).toBeNull();
      fireEvent.click(screen.getByRole('button', { name: 'Recent chat' }));
      const log = screen.getByRole('log');
      expect(await within(log).findByText('Wait for me')).toBeTruthy();
      expect(within(log).getByText(/Thinking/)).toBeTruthy();
      await within(log).findByText('Earlier answer');
      fireEvent.click(screen.getByRole('button', { name: 'Stop' }));
      expect(await screen.findByText('Stopped before the reply began. Nothing was stored. Your message is back in the message box.')).toBeTruthy();
      expect(seen.stops).toEqual([seen.generation]);
      expect(seen.sends).toBe(1);
      expect((composer() as HTMLTextAreaElement).value).toBe('Wait for me');
      expect(within(screen.getByRole('log')).queryByText('Wait for me')).toBeNull();
    });

    it('two messages waiting in two chats each show again, with Stop, in their own chat', async () => {
      const sends: string[] = [];
      server.onStream((_id, content) => {
        sends.push(content);
        return new Promise<Response>(() => undefined);
      });
      await renderLoaded();
      await sendWaiting('First waits');
      fireEvent.click(screen.getByRole('button', { name: 'Older chat' }));
      await screen.findByText('No messages yet');
      await sendWaiting('Second waits');
      fireEvent.click(screen.getByRole('button', { name: 'Recent chat' }));
      const log = screen.getByRole('log');
      expect(await within(log).findByText('First waits')).toBeTruthy();
      await within(log).findByText('Earlier answer');
      expect(within(log).queryByText('Second waits')).toBeNull();
      expect(screen.getByRole('button', { name: 'Stop' })).toBeTruthy();
      fireEvent.click(screen.getByRole('button', { name: 'Older chat' }));
      expect(await within(screen.getByRole('log')).findByText('Second waits')).toBeTruthy();
      expect(within(screen.getByRole('log')).queryByText('First waits')).toBeNull();
      expect(screen.getByRole('button', { name: 'Stop' })).toBeTruthy();
      expect(sends).toEqual(['First waits', 'Second waits']);
    });

    it('a stop the server refuses for the moment is asked again, and stops the reply', async () => {
      const seen = stoppableSend((earlier) => (earlier < 2 ? unavailable() : json({ status: 'stopped' })));
      await renderLoaded();
      fireEvent.click(await sendWaiting('Never mind'));
      expect(await screen.findByText('Stopped before the reply began. Nothing was stored. Your message is back in the message box.', {}, { timeout: 4000 })).toBeTruthy();
      expect(seen.stops).toEqual([seen.generation, seen.generation, seen.generation]);
      expect((composer() as HTMLTextAreaElement).value).toBe('Never mind');
    });

    it('a stop refused for the moment is asked again after the user left, and the message waits in its chat', async () => {
      const seen = stoppableSend((earlier) => (earlier < 1 ? unavailable() : json({ status: 'stopped' })));
      await renderLoaded();
      fireEvent.click(await sendWaiting('Never mind'));
      await waitFor(() => expect(seen.stops).toHaveLength(1));
      fireEvent.click(screen.getByRole('button', { name: 'Older chat' }));
      await screen.findByText('No messages yet');
      await waitFor(() => expect(seen.stops).toEqual([seen.generation, seen.generation]), { timeout: 3000 });
      fireEvent.click(screen.getByRole('button', { name: 'Recent chat' }));
      await waitFor(() => expect((composer() as HTMLTextAreaElement).value).toBe('Never mind'));
      expect(within(screen.getByRole('log')).queryByText('Never mind')).toBeNull();
      expect(seen.sends).toBe(1);
    });

    it('a double-click (or a second Enter) on Stop does not send the message given back again', async () => {
      const seen = stoppableSend(() => json({ status: 'stopped' }));
      await renderLoaded();
      fireEvent.change(composer(), { target: { value: 'Never mind' } });
      fireEvent.keyDown(composer(), { key: 'Enter' });
      fireEvent.click(await screen.findByRole('button', { name: 'Stop' }), { detail: 1 });
      await screen.findByText(/Stopped before the reply began/);
      // Send is back where Stop was, with the message in the box.
      fireEvent.click(screen.getByRole('button', { name: 'Send' }), { detail: 2 });
      fireEvent.keyDown(composer(), { key: 'Enter' });
      expect(seen.sends).toBe(1);
      expect((composer() as HTMLTextAreaElement).value).toBe('Never mind');
      // A moment later it is a send of its own.
      await new Promise((resolve) => setTimeout(resolve, 700));
      fireEvent.keyDown(composer(), { key: 'Enter' });
      await waitFor(() => expect(seen.sends).toBe(2));
    });
  });

  it('a new chat\'s first reply picked up after Stop names the chat', async () => {
    const sse = sseResponse();
    server.onStream(() => sse.response);
    await renderLoaded();
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    await openNewChat();
    fireEvent.change(composer(), { target: { value: 'Name me after Stop' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await act(async () => sse.send('event: delta\ndata: {"text":"Half"}\n\n'));
    const id = server.conversations.at(-1)?.id ?? '';
    server.messages[id] = [msg(id, 'user', 'Name me after Stop'), msg(id, 'assistant', 'Half, then the rest.')];
    fireEvent.click(screen.getByRole('button', { name: 'Stop' }));
    expect(await within(screen.getByRole('log')).findByText('Half, then the rest.', {}, { timeout: 4000 })).toBeTruthy();
    expect(await within(nav).findByRole('button', { name: 'Name me after Stop' })).toBeTruthy();
  });

  it('a chat named after a first message that was never stored takes the name of the first one it holds', async () => {
    let stream = sseResponse();
    server.onStream(() => stream.response);
    await renderLoaded();
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    await openNewChat();
    fireEvent.change(composer(), { target: { value: 'Secret project plan' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    // Taken by the server, the message names the chat; then its reply fails and nothing is stored.
    expect(await within(nav).findByRole('button', { name: 'Secret project plan' })).toBeTruthy();
    await act(async () => {
      stream.send('event: error\ndata: {"message":"The model provider failed.","code":"assistant_failed"}\n\n');
      stream.close();
    });
    await waitFor(() => expect((composer() as HTMLTextAreaElement).value).toBe('Secret project plan'));

    stream = sseResponse();
    fireEvent.change(composer(), { target: { value: 'Something unrelated' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    const id = server.conversations.at(-1)?.id ?? '';
    await storeAndFinishIn(id, stream, 'Something unrelated', 'Noted.');
    expect(await within(nav).findByRole('button', { name: 'Something unrelated' })).toBeTruthy();
    expect(within(nav).queryByRole('button', { name: 'Secret project plan' })).toBeNull();
  });

  it('a reply that fails after its first words says it broke off, not that sending failed', async () => {
    const stream = sseResponse();
    server.onStream(() => stream.response);
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Tell me everything' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await act(async () => {
      stream.send('event: delta\ndata: {"text":"Here is the first half"}\n\n');
    });
    expect(await within(screen.getByRole('log')).findByText('Here is the first half')).toBeTruthy();
    await act(async () => {
      stream.send('event: error\ndata: {"message":"The assistant could not produce a reply.","code":"assistant_failed"}\n\n');
      stream.close();
    });
    await waitFor(() => expect((composer() as HTMLTextAreaElement).value).toBe('Tell me everything'));
    expect(screen.getByRole('alert').textContent).toBe(
      'The reply broke off, and nothing of it was stored: The assistant could not produce a reply. Your message is back in the message box.',
    );
    expect(within(screen.getByRole('log')).queryByText('Here is the first half')).toBeNull();
  });

  it('keeps the focus in the message box when Send, and then Stop, give way to each other', async () => {
    const sse = sseResponse();
    server.onStream(() => sse.response);
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Hello' } });
    const send = screen.getByRole('button', { name: 'Send' });
    send.focus();
    fireEvent.click(send);
    const stop = await screen.findByRole('button', { name: 'Stop' });
    expect(document.activeElement).toBe(composer());

    stop.focus();
    const done = { user_message: msg('c2', 'user', 'Hello'), assistant_message: msg('c2', 'assistant', 'Hi.') };
    await act(async () => {
      sse.send(`event: done\ndata: ${JSON.stringify(done)}\n\n`);
      sse.close();
    });
    await screen.findByRole('button', { name: 'Send' });
    expect(document.activeElement).toBe(composer());
  });

  it('sends once for two Enters in one task, before a render could disable sending', async () => {
    const sse = sseResponse();
    server.onStream(() => sse.response);
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Only once' } });
    act(() => {
      for (let i = 0; i < 2; i += 1) composer().dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true, cancelable: true }));
    });
    await screen.findByRole('button', { name: 'Stop' });
    await new Promise((r) => setTimeout(r, 20));
    const posts = fetchMock.calls.filter((c) => c.method === 'POST' && c.url === '/api/v1/conversations/c2/messages');
    expect(posts).toHaveLength(1);
  });

  it('does not take the second click of a double-click on Send for a Stop', async () => {
    const sse = sseResponse();
    server.onStream(() => sse.response);
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Hello' } });
    fireEvent.click(screen.getByRole('button', { name: 'Send' }), { detail: 1 });
    const stop = await screen.findByRole('button', { name: 'Stop' });
    fireEvent.click(stop, { detail: 2 });
    await act(async () => sse.send('event: delta\ndata: {"text":"Hi"}\n\n'));
    expect(screen.getByRole('button', { name: 'Stop' })).toBe(stop);
    expect(screen.queryByText(/Stopped/)).toBeNull();
    fireEvent.click(stop, { detail: 1 });
    expect(await screen.findByText(/Stopped/)).toBeTruthy();
  });

  it('a rename the server refuses leaves the field open with the focus back in it', async () => {
    const renames = refusingRenames(() => true);
    render(<App />);
    await screen.findByText('Earlier answer');
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    fireEvent.click(within(nav).getByRole('button', { name: 'Rename Older chat' }));
    const input = within(nav).getByRole('textbox', { name: 'Conversation title' }) as HTMLInputElement;
    fireEvent.change(input, { target: { value: 'Better name' } });
    const save = within(nav).getByRole('button', { name: 'Save' });
    save.focus();
    fireEvent.click(save);
    await waitFor(() => expect(renames.count).toBe(1));
    await waitFor(() => expect(document.activeElement).toBe(input));
    expect(input.value).toBe('Better name');
    expect(input.readOnly).toBe(false);
  });

  it('a title takes up to the server\'s 200 characters, counted as the server counts them (an emoji is one)', async () => {
    await renderLoaded();
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    fireEvent.click(within(nav).getByRole('button', { name: 'Rename Older chat' }));
    const input = within(nav).getByRole('textbox', { name: 'Conversation title' }) as HTMLInputElement;
    expect(input.getAttribute('dir')).toBe('auto');
    fireEvent.change(input, { target: { value: '😀'.repeat(150) } });
    expect(Array.from(input.value)).toHaveLength(150);
    fireEvent.change(input, { target: { value: '😀'.repeat(250) } });
    expect(input.value).toBe('😀'.repeat(200));
    // Typed into the full title, a character is refused, as maxLength refuses it: the title's
    // end is not cut instead.
    fireEvent.change(input, { target: { value: `A${'😀'.repeat(200)}` } });
    expect(input.value).toBe('😀'.repeat(200));
    // Pasted, characters of several code points are kept whole, as many as fit.
    const family = '👨‍👩‍👧‍👦';
    fireEvent.change(input, { target: { value: '' } });
    fireEvent.change(input, { target: { value: family.repeat(40) } });
    expect(input.value).toBe(family.repeat(28));
    fireEvent.change(input, { target: { value: '😀'.repeat(200) } });
    fireEvent.submit(input);
    expect(await within(nav).findByRole('button', { name: '😀'.repeat(200) })).toBeTruthy();
  });

  it('New chat opens an empty chat, created on the server only by its first message', async () => {
    const done = sseResponse();
    server.onStream(() => done.response);
    await renderLoaded();
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    const entries = history.length;
    await openNewChat();
    await openNewChat();
    expect(within(nav).getAllByRole('listitem')).toHaveLength(2);
    expect(within(nav).queryByRole('button', { current: 'page' })).toBeNull();
    expect(screen.getByRole('heading', { level: 1 }).textContent).toBe('New chat');
    expect(document.title).toBe('New chat – Chat');
    // Its own address and history entry: Back returns to the conversation it was opened from.
    expect(window.location.hash).toBe('#/new');
    expect(history.length).toBe(entries + 1);
    expect(fetchMock.calls.filter((c) => c.method === 'POST')).toEqual([]);
    fireEvent.change(composer(), { target: { value: 'Begin here' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await finishInNewestChat(done, 'Begin here');
    expect(fetchMock.calls.filter((c) => c.method === 'POST' && c.url === '/api/v1/conversations')).toHaveLength(1);
    expect(await within(nav).findByRole('button', { name: 'Begin here', current: 'page' })).toBeTruthy();
    // The chat it became takes the new chat's place in the history.
    expect(window.location.hash).toBe(`#/c/${server.conversations.at(-1)?.id}`);
    expect(history.length).toBe(entries + 1);
  });

  it('a new chat reloaded comes back as a new chat, not the newest conversation', async () => {
    history.replaceState(null, '', '/#/new');
    render(<App />);
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    await within(nav).findByRole('button', { name: 'Recent chat' });
    expect(await screen.findByText('Start a new conversation')).toBeTruthy();
    expect(screen.queryByText('Earlier answer')).toBeNull();
    expect(window.location.hash).toBe('#/new');
    fireEvent.click(within(nav).getByRole('button', { name: 'Recent chat' }));
    expect(await screen.findByText('Earlier answer')).toBeTruthy();
    expect(window.location.hash).toBe('#/c/c2');
  });

  it('Show more also brings a conversation that moved to the top since the list loaded', async () => {
    const [a, b, d] = [conv('a', 'Alpha', '2026-03-05T00:00:00Z'), conv('b', 'Beta', '2026-03-04T00:00:00Z'), conv('d', 'Delta', '2026-03-01T00:00:00Z')];
    // On the second page when the list loaded; then active on another device, so now at the top.
    const moved = conv('c', 'Gamma', '2026-03-09T00:00:00Z');
    let active = false;
    for (const c of [a, b, moved, d]) {
      server.conversations.push(c);
      server.messages[c.id] = [];
    }
    vi.stubGlobal(
      'fetch',
      mockFetch([
        (url, init) => {
          if (url.pathname !== '/api/v1/conversations' || (init.method ?? 'GET') !== 'GET') return undefined;
          if (url.searchParams.get('cursor') === 'after-b') return json({ items: [d], next_cursor: null });
          return json(active ? { items: [moved, a], next_cursor: 'after-a' } : { items: [a, b], next_cursor: 'after-b' });
        },
        server.route,
      ]).fn,
    );
    render(<App />);
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    await within(nav).findByRole('button', { name: 'Beta' });
    active = true;
    fireEvent.click(within(nav).getByRole('button', { name: 'Show more' }));
    await within(nav).findByRole('button', { name: 'Delta' });
    await waitFor(() =>
      expect(within(nav).getAllByRole('listitem').map((item) => item.textContent)).toEqual(['Gamma', 'Alpha', 'Beta', 'Delta']),
    );
    expect(within(nav).queryByRole('button', { name: 'Show more' })).toBeNull();
  });

  it('Show more keeps the keyboard focus while loading, then gives it to the first conversation it brought', async () => {
    const [a, b, d] = [conv('a', 'Alpha', '2026-03-05T00:00:00Z'), conv('b', 'Beta', '2026-03-04T00:00:00Z'), conv('d', 'Delta', '2026-03-01T00:00:00Z')];
    for (const c of [a, b, d]) {
      server.conversations.push(c);
      server.messages[c.id] = [];
    }
    let olderPage: (page: Response) => void = () => undefined;
    const fetched = mockFetch([
      (url, init) => {
        if (url.pathname !== '/api/v1/conversations' || (init.method ?? 'GET') !== 'GET') return undefined;
        if (url.searchParams.get('cursor') === 'after-b') return new Promise<Response>((resolve) => (olderPage = resolve));
        return json({ items: [a, b], next_cursor: 'after-b' });
      },
      server.route,
    ]);
    vi.stubGlobal('fetch', fetched.fn);
    render(<App />);
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    // Pressed the moment it shows, before the effects of the render that showed it have run.
    await clickTheMomentItShows(nav, 'Show more', { focus: true });
    const loading = await within(nav).findByRole('button', { name: 'Loading…' });
    expect(loading.getAttribute('aria-disabled')).toBe('true');
    expect(loading.hasAttribute('disabled')).toBe(false);
    fireEvent.click(loading);
    olderPage(json({ items: [d], next_cursor: null }));
    const delta = await within(nav).findByRole('button', { name: 'Delta' });
    await waitFor(() => expect(document.activeElement).toBe(delta));
    expect(within(nav).queryByRole('button', { name: /Show more|Loading/ })).toBeNull();
    expect(fetched.calls.filter((c) => c.url.includes('cursor=after-b'))).toHaveLength(1);
  });

  describe('back to the tab after another device was used', () => {
    let hidden = false;
    beforeEach(() => {
      hidden = false;
      vi.spyOn(document, 'hidden', 'get').mockImplementation(() => hidden);
    });
    afterEach(() => {
      vi.restoreAllMocks();
    });

    /** The tab hidden for `ms`, then shown again. */
    const hideTabFor = (ms: number) =>
      act(() => {
        hidden = true;
        document.dispatchEvent(new Event('visibilitychange'));
        const shownAt = Date.now() + ms;
        const clock = vi.spyOn(Date, 'now').mockReturnValue(shownAt);
        hidden = false;
        document.dispatchEvent(new Event('visibilitychange'));
        clock.mockRestore();
      });
    /** A page of the recent chat's messages as the server gives it: newest first, `before` a position. */
    const recentChatPage = (url: URL, init: RequestInit): Response | undefined => {
      if (url.pathname !== '/api/v1/conversations/c2/messages' || (init.method ?? 'GET') !== 'GET') return undefined;
      const all = server.messages.c2 ?? [];
      const end = url.searchParams.has('before') ? Number(url.searchParams.get('before')) : all.length;
      const start = Math.max(0, end - Number(url.searchParams.get('limit') ?? 50));
      return json({ items: all.slice(start, end), next_cursor: start > 0 ? String(start) : null });
    };

    /** Stubs fetch so that, once `hold()` is called, the next read of the list waits for `answer()`. */
    const listReadHeldOnDemand = () => {
      let holding = false;
      let release: () => void = () => undefined;
      vi.stubGlobal(
        'fetch',
        mockFetch([
          (url, init) => {
            if (!holding || url.pathname !== '/api/v1/conversations' || (init.method ?? 'GET') !== 'GET') return undefined;
            holding = false;
            return new Promise<undefined>((resolve) => (release = () => resolve(undefined)));
          },
          server.route,
        ]).fn,
      );
      return {
        hold: () => {
          holding = true;
        },
        answer: () => act(async () => release()),
      };
    };
    const listReads = () => fetchMock.calls.filter((c) => c.method === 'GET' && c.url.startsWith('/api/v1/conversations?')).length;

    it('shows the chats, names and messages the other device added', async () => {
      await renderLoaded();
      const nav = screen.getByRole('navigation', { name: 'Conversations' });
      const phoneChat = conv('c3', 'From my phone', '2026-01-05T00:00:00Z');
      server.conversations.push(phoneChat);
      server.messages.c3 = [];
      const older = server.conversations.find((c) => c.id === 'c1');
      if (older) Object.assign(older, { title: 'Renamed on my phone', updated_at: '2026-01-04T00:00:00Z' });
      server.messages.c2?.push(msg('c2', 'user', 'Asked on my phone'), msg('c2', 'assistant', 'Answered on my phone'));

      await hideTabFor(60_000);
      await within(nav).findByRole('button', { name: 'From my phone' });
      await within(nav).findByRole('button', { name: 'Renamed on my phone' });
      await screen.findByText('Answered on my phone');
      expect(within(nav).getAllByRole('button', { name: /^(From my phone|Renamed on my phone|Recent chat)$/ }).map((b) => b.textContent)).toEqual([
        'From my phone',
        'Renamed on my phone',
        'Recent chat',
      ]);
      expect(screen.getAllByText('Earlier answer')).toHaveLength(1);
    });

    it('drops the chats the other device deleted, and says so in the one open here', async () => {
      await renderLoaded();
      const nav = screen.getByRole('navigation', { name: 'Conversations' });
      server.conversations.splice(server.conversations.findIndex((c) => c.id === 'c2'), 1);

      await hideTabFor(60_000);
      await waitFor(() => expect(within(nav).queryByRole('button', { name: 'Recent chat' })).toBeNull());
      expect(await screen.findByText(/This conversation has been deleted/)).toBeTruthy();
      expect(within(nav).getByRole('button', { name: 'Older chat' })).toBeTruthy();
    });

    it('says so in the open conversation the other device deleted, though the list has not reached it', async () => {
      await renderOlderChatBeyondTheListsPage();
      server.conversations.splice(server.conversations.findIndex((c) => c.id === 'c1'), 1);

      await hideTabFor(60_000);
      expect(await screen.findByText(/This conversation has been deleted/)).toBeTruthy();
      expect(screen.getByRole('heading', { level: 1 }).textContent).toBe('Deleted conversation');
    });

    it('shows every message when more came than a page holds, the ones between loading as older', async () => {
      vi.stubGlobal(
        'fetch',
        mockFetch([recentChatPage, server.route]).fn,
      );
      await renderLoaded();
      for (let i = 0; i < 27; i += 1) server.messages.c2?.push(msg('c2', 'user', `Phone question ${i}`), msg('c2', 'assistant', `Phone answer ${i}`));

      await hideTabFor(60_000);
      await screen.findByText('Phone answer 26');
      await screen.findByText('Phone answer 0');
      const log = screen.getByRole('log');
      expect(within(log).getAllByText(/^(Earlier answer|Phone answer \d+)$/).map((m) => m.textContent)).toEqual([
        'Earlier answer',
        ...Array.from({ length: 27 }, (_, i) => `Phone answer ${i}`),
      ]);
    });

    it('keeps the order when an older page comes in while the newest is read again', async () => {
      const held: Record<'older' | 'newest', (() => void) | null> = { older: null, newest: null };
      const holding = { older: true, newest: false };
      vi.stubGlobal(
        'fetch',
        mockFetch([
          (url, init) => {
            const page = recentChatPage(url, init);
            if (page === undefined) return undefined;
            const kind = url.searchParams.has('before') ? 'older' : 'newest';
            if (!holding[kind]) return page;
            holding[kind] = false;
            return new Promise<Response>((resolve) => (held[kind] = () => resolve(page)));
          },
          server.route,
        ]).fn,
      );
      server.messages.c2 = Array.from({ length: 60 }, (_, i) => [msg('c2', 'user', `Before ${i}`), msg('c2', 'assistant', `Reply before ${i}`)]).flat();
      render(<App />);
      await screen.findByText('Reply before 59');
      await waitFor(() => expect(held.older).not.toBeNull());
      for (let i = 0; i < 30; i += 1) server.messages.c2.push(msg('c2', 'user', `Phone ${i}`), msg('c2', 'assistant', `Phone reply ${i}`));
      holding.newest = true;
      await hideTabFor(60_000);
      await waitFor(() => expect(held.newest).not.toBeNull());
      // The older page lands first, with the cursor the newest page then replaces.
      await act(async () => held.older?.());
      await screen.findByText('Reply before 10');
      await act(async () => held.newest?.());
      await screen.findByText('Phone reply 29');
      await screen.findByText('Reply before 0');
      const replies = within(screen.getByRole('log')).getAllByText(/^(Reply before|Phone reply) \d+$/).map((m) => m.textContent);
      expect(replies).toEqual([...Array.from({ length: 60 }, (_, i) => `Reply before ${i}`), ...Array.from({ length: 30 }, (_, i) => `Phone reply ${i}`)]);
    });

    it('shows a reply another device is getting, as on opening, also where the messages had failed to load', async () => {
      const G = 'dddddddd-0000-4000-8000-000000000004';
      const ev = (seq: number, event: string, data: unknown) => `id: ${G}:${seq}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
      let failing = true;
      vi.stubGlobal(
        'fetch',
        mockFetch([
          (url) =>
            failing && url.pathname === '/api/v1/conversations/c2/messages'
              ? json({ status: 'error', message: 'Storage is unavailable.', code: 'storage_unavailable' }, 503)
              : undefined,
          server.route,
        ]).fn,
      );
      render(<App />);
      await screen.findByRole('button', { name: 'Retry' });
      failing = false;
      const sse = sseResponse();
      server.onFollow(() => sse.response);
      server.messages.c2?.push(msg('c2', 'user', 'Asked on my phone'));

      act(() => {
        window.dispatchEvent(new Event('online'));
      });
      await screen.findByText('Earlier answer');
      await act(async () => sse.send(ev(1, 'start', { generation_id: G, conversation_id: 'c2', content: 'Still asking on my phone' }) + ev(2, 'delta', { text: 'Half an answer' })));
      expect(await within(screen.getByRole('log')).findByText('Half an answer')).toBeTruthy();
      expect(screen.queryByRole('button', { name: 'Retry' })).toBeNull();
    });

    it('refused a follow while another device\'s reply ran and was stored, shows it once let in', () =>
      inFakeTime(async () => {
        let follows = 0;
        server.onFollow(() => {
          follows += 1;
          if (follows > 1) return new Response(null, { status: 204 });
          // Meanwhile the other device's exchange is stored.
          server.messages.c2?.push(msg('c2', 'user', 'Asked on my laptop'), msg('c2', 'assistant', 'Answered while refused'));
          return json({ status: 'error', message: 'Too many replies are streaming to this client.', code: 'too_many_streams' }, 429, { 'Retry-After': '1' });
        });
        await renderLoaded();
        // Said while refused, rather than looking idle.
        expect(await within(screen.getByRole('log')).findByText(/Live updates are paused/)).toBeTruthy();
        await passTime(1_100);
        expect(follows).toBeGreaterThanOrEqual(2);
        expect(await within(screen.getByRole('log')).findByText('Answered while refused')).toBeTruthy();
        expect(within(screen.getByRole('log')).queryByText(/Live updates are paused/)).toBeNull();
      }));

    it('follows no reply while hidden, and follows it again from its start once shown', async () => {
      const G = 'eeeeeeee-0000-4000-8000-000000000006';
      const ev = (seq: number, event: string, data: unknown) => `id: ${G}:${seq}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
      const follows: { signal: AbortSignal | null | undefined; sse: ReturnType<typeof sseResponse> }[] = [];
      server.onFollow((_id, _last, init) => {
        const sse = sseResponse();
        follows.push({ signal: init.signal, sse });
        return sse.response;
      });
      await renderLoaded();
      await waitFor(() => expect(follows).toHaveLength(1));
      const first = follows[0]!;
      await act(async () => first.sse.send(ev(1, 'start', { generation_id: G, conversation_id: 'c2', content: 'Asked elsewhere' }) + ev(2, 'delta', { text: 'Answering' })));
      expect(await within(screen.getByRole('log')).findByText('Answering')).toBeTruthy();

      act(() => {
        hidden = true;
        document.dispatchEvent(new Event('visibilitychange'));
      });
      expect(first.signal?.aborted).toBe(true);
      await waitFor(() => expect(within(screen.getByRole('log')).queryByText('Answering')).toBeNull());
      // Another tab's reply beginning here is not followed while hidden either.
      act(() => new BroadcastChannel('chat-tabs').postMessage({ kind: 'replying', id: 'c2' }));
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(follows).toHaveLength(1);

      act(() => {
        hidden = false;
        document.dispatchEvent(new Event('visibilitychange'));
      });
      await waitFor(() => expect(follows).toHaveLength(2));
      await act(async () => follows[1]!.sse.send(ev(1, 'start', { generation_id: G, conversation_id: 'c2', content: 'Asked elsewhere' }) + ev(2, 'delta', { text: 'Answering, shown again' })));
      expect(await within(screen.getByRole('log')).findByText('Answering, shown again')).toBeTruthy();
    });

    it('shows a reply another device is getting when the tab comes back', async () => {
      const G = 'eeeeeeee-0000-4000-8000-000000000005';
      const ev = (seq: number, event: string, data: unknown) => `id: ${G}:${seq}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
      await renderLoaded();
      const sse = sseResponse();
      server.onFollow(() => sse.response);
      await hideTabFor(60_000);
      await act(async () => sse.send(ev(1, 'start', { generation_id: G, conversation_id: 'c2', content: 'Asked on my phone' }) + ev(2, 'delta', { text: 'Answering now' })));
      expect(await within(screen.getByRole('log')).findByText('Answering now')).toBeTruthy();
      expect(screen.getByRole('button', { name: 'Stop' })).toBeTruthy();
    });

    it('says so when the chat being renamed is found deleted by its messages before the list', async () => {
      const list = listReadHeldOnDemand();
      await renderLoaded();
      const nav = screen.getByRole('navigation', { name: 'Conversations' });
      fireEvent.click(within(nav).getByRole('button', { name: 'Rename Recent chat' }));
      within(nav).getByRole('textbox', { name: 'Conversation title' }).focus();
      server.conversations.splice(server.conversations.findIndex((c) => c.id === 'c2'), 1);
      list.hold();
      const otherTab = new BroadcastChannel('chat-tabs');
      const heard: unknown[] = [];
      otherTab.onmessage = (message) => heard.push(message.data);

      await hideTabFor(60_000);
      expect((await within(nav).findByRole('alert')).textContent).toBe('That conversation was deleted on another device.');
      await waitFor(() => expect(document.activeElement?.classList.contains('new-chat')).toBe(true));
      expect(within(nav).queryByRole('button', { name: 'Recent chat' })).toBeNull();
      await waitFor(() => expect(heard).toContainEqual({ kind: 'deleted', id: 'c2', onAnotherDevice: true }));
      otherTab.close();
      await list.answer();
    });

    it('keeps what was renamed here while the catch-up read was out, beyond the page or in it', async () => {
      let answerList: () => void = () => undefined;
      let holdList = false;
      vi.stubGlobal(
        'fetch',
        mockFetch([
          (url, init) => {
            if (url.pathname !== '/api/v1/conversations' || (init.method ?? 'GET') !== 'GET' || url.searchParams.has('cursor')) return undefined;
            // The first page as it is when the read arrives: the recent chat only, the older beyond.
            const page = json({ items: server.conversations.filter((c) => c.id === 'c2').map((c) => ({ ...c })), next_cursor: 'after-c2' });
            return holdList ? new Promise<Response>((resolve) => (answerList = () => resolve(page))) : page;
          },
          server.route,
        ]).fn,
      );
      history.replaceState(null, '', '/#/c/c1');
      render(<App />);
      const nav = screen.getByRole('navigation', { name: 'Conversations' });
      await screen.findByRole('heading', { name: 'Older chat' });
      holdList = true;
      await hideTabFor(60_000);
      holdList = false;
      for (const [from, to] of [
        ['Older chat', 'Older, renamed meanwhile'],
        ['Recent chat', 'Recent, renamed meanwhile'],
      ] as const) {
        fireEvent.click(within(nav).getByRole('button', { name: `Rename ${from}` }));
        fireEvent.change(within(nav).getByRole('textbox', { name: 'Conversation title' }), { target: { value: to } });
        fireEvent.click(within(nav).getByRole('button', { name: 'Save' }));
        await within(nav).findByRole('button', { name: to });
      }
      await act(async () => answerList());
      await new Promise((settle) => setTimeout(settle, 50));
      expect(within(nav).getAllByRole('button', { name: /^(Older|Recent), renamed meanwhile$/ }).map((b) => b.textContent).sort()).toEqual([
        'Older, renamed meanwhile',
        'Recent, renamed meanwhile',
      ]);
      expect(screen.queryByText(/has been deleted/)).toBeNull();
    });

    it('reads the open conversation on a return while the last list read is still out', async () => {
      const list = listReadHeldOnDemand();
      await renderLoaded();
      list.hold();
      await hideTabFor(60_000);
      server.messages.c2?.push(msg('c2', 'user', 'Asked meanwhile'), msg('c2', 'assistant', 'Answered meanwhile'));
      // Back again 5 s later (on the clock the first return left), the first list read still out.
      await hideTabFor(65_000);
      expect(await screen.findByText('Answered meanwhile')).toBeTruthy();
      await list.answer();
    });

    it('reads nothing again after a glance at another tab, and catches up when back online', async () => {
      await renderLoaded();
      const reads = listReads();
      await hideTabFor(1_000);
      expect(listReads()).toBe(reads);
      server.conversations.push(conv('c3', 'While offline', '2026-01-05T00:00:00Z'));
      // A flapping network says so several times: the list is read once.
      act(() => {
        for (let i = 0; i < 3; i += 1) window.dispatchEvent(new Event('online'));
      });
      await within(screen.getByRole('navigation', { name: 'Conversations' })).findByRole('button', { name: 'While offline' });
      expect(listReads()).toBe(reads + 1);
    });
  });

  it('Show more drops a chat deleted on another device since the list loaded', async () => {
    const [a, b, d] = [conv('a', 'Alpha', '2026-03-05T00:00:00Z'), conv('b', 'Beta', '2026-03-04T00:00:00Z'), conv('d', 'Delta', '2026-03-01T00:00:00Z')];
    for (const c of [a, b, d]) {
      server.conversations.push(c);
      server.messages[c.id] = [];
    }
    let firstPage = [a, b];
    vi.stubGlobal(
      'fetch',
      mockFetch([
        (url, init) => {
          if (url.pathname !== '/api/v1/conversations' || (init.method ?? 'GET') !== 'GET') return undefined;
          if (url.searchParams.get('cursor') === 'after-b') return json({ items: [d], next_cursor: null });
          return json({ items: firstPage, next_cursor: 'after-b' });
        },
        server.route,
      ]).fn,
    );
    render(<App />);
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    await within(nav).findByRole('button', { name: 'Beta' });
    const c = conv('c', 'Gamma', '2026-03-02T00:00:00Z');
    firstPage = [a, c];
    fireEvent.click(within(nav).getByRole('button', { name: 'Show more' }));
    await within(nav).findByRole('button', { name: 'Delta' });
    expect(within(nav).queryByRole('button', { name: 'Beta' })).toBeNull();
    expect(within(nav).getAllByRole('button', { name: /^(Alpha|Gamma|Delta)$/ }).map((x) => x.textContent)).toEqual(['Alpha', 'Gamma', 'Delta']);
  });

  it('renames and deletes (after confirmation) conversations', async () => {
    await renderLoaded();
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    fireEvent.click(within(nav).getByRole('button', { name: 'Rename Older chat' }));
    const input = within(nav).getByRole('textbox', { name: 'Conversation title' });
    fireEvent.change(input, { target: { value: 'Renamed chat' } });
    fireEvent.submit(input);
    expect(await within(nav).findByRole('button', { name: 'Renamed chat' })).toBeTruthy();
    expect(server.conversations.find((c) => c.id === 'c1')?.title).toBe('Renamed chat');
    expect(within(nav).getAllByRole('listitem')[0]?.textContent).toBe('Renamed chat');

    fireEvent.click(within(nav).getByRole('button', { name: 'Delete Renamed chat' }));
    const dialog = screen.getByRole('alertdialog');
    fireEvent.click(within(dialog).getByRole('button', { name: 'Cancel' }));
    expect(screen.queryByRole('alertdialog')).toBeNull();
    expect(server.conversations.some((c) => c.id === 'c1')).toBe(true);

    fireEvent.click(within(nav).getByRole('button', { name: 'Delete Renamed chat' }));
    fireEvent.click(within(screen.getByRole('alertdialog')).getByRole('button', { name: 'Delete' }));
    await waitFor(() => expect(within(nav).queryByRole('button', { name: 'Renamed chat' })).toBeNull());
    expect(server.conversations.some((c) => c.id === 'c1')).toBe(false);
  });

  it('renaming a conversation deleted on another device drops it from the list, saying so', async () => {
    await renderLoaded();
    server.conversations.splice(server.conversations.findIndex((c) => c.id === 'c1'), 1);
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    fireEvent.click(within(nav).getByRole('button', { name: 'Rename Older chat' }));
    const input = within(nav).getByRole('textbox', { name: 'Conversation title' });
    fireEvent.change(input, { target: { value: 'Too late' } });
    fireEvent.submit(input);
    expect(await within(nav).findByText(/that conversation was deleted, perhaps on another device/)).toBeTruthy();
    expect(within(nav).queryByRole('button', { name: 'Older chat' })).toBeNull();
    expect(within(nav).queryByRole('textbox', { name: 'Conversation title' })).toBeNull();
    await waitFor(() => expect(document.activeElement?.classList.contains('new-chat')).toBe(true));
  });

  it('Escape in the phone menu\'s delete dialog or rename closes only that, not the menu', async () => {
    const { container } = render(<App />);
    await screen.findByText('Earlier answer');
    fireEvent.click(screen.getByRole('button', { name: 'Conversations menu' }));
    const app = container.querySelector('.app');
    expect(app?.classList.contains('menu-open')).toBe(true);
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    fireEvent.click(within(nav).getByRole('button', { name: 'Delete Older chat' }));
    fireEvent.keyDown(screen.getByRole('alertdialog'), { key: 'Escape' });
    expect(screen.queryByRole('alertdialog')).toBeNull();
    expect(app?.classList.contains('menu-open')).toBe(true);
    fireEvent.click(within(nav).getByRole('button', { name: 'Rename Older chat' }));
    fireEvent.keyDown(within(nav).getByRole('textbox', { name: 'Conversation title' }), { key: 'Escape' });
    expect(within(nav).queryByRole('textbox', { name: 'Conversation title' })).toBeNull();
    expect(app?.classList.contains('menu-open')).toBe(true);
  });

  it('keeps keyboard focus going round the open phone menu', async () => {
    await renderLoaded();
    fireEvent.click(screen.getByRole('button', { name: 'Conversations menu' }));
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    const controls = within(nav).getAllByRole('button');
    const first = controls[0] as HTMLElement;
    const last = controls.at(-1) as HTMLElement;
    await waitFor(() => expect(document.activeElement).toBe(first));
    fireEvent.keyDown(first, { key: 'Tab', shiftKey: true });
    expect(document.activeElement).toBe(last);
    fireEvent.keyDown(last, { key: 'Tab' });
    expect(document.activeElement).toBe(first);
  });

  it('Back with the phone menu open shows the chat it goes back to, and the focus goes to the menu button', async () => {
    const { container } = render(<App />);
    await screen.findByText('Earlier answer');
    const menuButton = screen.getByRole('button', { name: 'Conversations menu' });
    fireEvent.click(menuButton);
    const app = container.querySelector('.app');
    expect(app?.classList.contains('menu-open')).toBe(true);
    window.location.hash = '#/c/c1';
    fireEvent(window, new HashChangeEvent('hashchange'));
    await screen.findByRole('heading', { name: 'Older chat' });
    expect(app?.classList.contains('menu-open')).toBe(false);
    await waitFor(() => expect(document.activeElement).toBe(menuButton));
  });

  it('a chat tapped in the phone menu is shown with the focus on the menu button: no on-screen keyboard opens over it', async () => {
    await renderLoaded();
    const menuButton = screen.getByRole('button', { name: 'Conversations menu' });
    fireEvent.click(menuButton);
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    const older = within(nav).getByRole('button', { name: 'Older chat' });
    fireEvent.pointerDown(older, { pointerType: 'touch' });
    fireEvent.click(older, { detail: 1 });
    await screen.findByRole('heading', { name: 'Older chat' });
    await waitFor(() => expect(document.activeElement).toBe(menuButton));
    await act(() => new Promise((resolve) => setTimeout(resolve, 10)));
    expect(document.activeElement).toBe(menuButton);
  });

  it('a chat clicked in the list takes the keys typed next; chosen with the keyboard or tapped, the focus stays in the list', async () => {
    await renderLoaded();
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    const older = within(nav).getByRole('button', { name: 'Older chat' });
    older.focus();
    fireEvent.click(older, { detail: 0 });
    await screen.findByRole('heading', { name: 'Older chat' });
    expect(document.activeElement).toBe(older);

    const recent = within(nav).getByRole('button', { name: 'Recent chat' });
    recent.focus();
    fireEvent.pointerDown(recent, { pointerType: 'touch' });
    fireEvent.click(recent, { detail: 1 });
    await screen.findByRole('heading', { name: 'Recent chat' });
    // No on-screen keyboard opens over the chat just tapped.
    expect(document.activeElement).toBe(recent);

    fireEvent.pointerDown(older, { pointerType: 'mouse' });
    fireEvent.click(older, { detail: 1 });
    await screen.findByRole('heading', { name: 'Older chat' });
    expect(document.activeElement).toBe(composer());
  });

  it('on a wide screen the message box has the focus from the start; not on a phone, where it would open the keyboard', async () => {
    const screenIsPhone = (phone: boolean) =>
      vi.stubGlobal('matchMedia', (query: string) => ({ matches: phone, media: query, addEventListener: () => undefined, removeEventListener: () => undefined }));
    screenIsPhone(false);
    const wide = render(<App />);
    await screen.findByText('Earlier answer');
    expect(document.activeElement).toBe(composer());
    wide.unmount();
    screenIsPhone(true);
    render(<App />);
    await screen.findByText('Earlier answer');
    expect(document.activeElement).toBe(document.body);
  });

  it('toggles the theme and remembers the choice', async () => {
    await renderLoaded();
    fireEvent.click(screen.getByRole('button', { name: 'Switch to dark theme' }));
    expect(document.documentElement.dataset.theme).toBe('dark');
    expect(localStorage.getItem('chat.theme')).toBe('dark');
    expect(screen.getByRole('button', { name: 'Switch to light theme' })).toBeTruthy();
  });
});

describe('drafts', () => {
  it('keeps unsent text over a reload of the page', async () => {
    const first = render(<App />);
    await screen.findByText('Earlier answer');
    fireEvent.change(composer(), { target: { value: 'Half a thought' } });
    first.unmount();
    render(<App />);
    await screen.findByText('Earlier answer');
    expect((composer() as HTMLTextAreaElement).value).toBe('Half a thought');
  });

  it('a send refused after the user left for another chat says why once they are back', async () => {
    let refuse: ((response: Response) => void) | undefined;
    server.onStream(() => new Promise<Response>((resolve) => (refuse = resolve)));
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Refused while away' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await waitFor(() => expect(refuse).toBeDefined());
    fireEvent.click(screen.getByRole('button', { name: 'Older chat' }));
    await screen.findByText('No messages yet');
    await act(async () => refuse?.(json({ status: 'error', message: 'Storage is unavailable.', code: 'storage_unavailable' }, 503)));
    expect(screen.queryByRole('alert')).toBeNull();
    fireEvent.click(screen.getByRole('button', { name: 'Recent chat' }));
    await screen.findByText('Earlier answer');
    expect((composer() as HTMLTextAreaElement).value).toBe('Refused while away');
    expect(screen.getByRole('alert').textContent).toBe('Sending failed: Storage is unavailable. Your message is back in the message box.');
    // Said once: the next visit finds only the text.
    fireEvent.click(screen.getByRole('button', { name: 'Older chat' }));
    await screen.findByText('No messages yet');
    fireEvent.click(screen.getByRole('button', { name: 'Recent chat' }));
    await screen.findByText('Earlier answer');
    expect(screen.queryByRole('alert')).toBeNull();
  });

  it('keeps unsent text per conversation when switching away and back', async () => {
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'half-written thought' } });
    fireEvent.click(screen.getByRole('button', { name: 'Older chat' }));
    await screen.findByText('No messages yet');
    expect((composer() as HTMLTextAreaElement).value).toBe('');
    fireEvent.click(screen.getByRole('button', { name: 'Recent chat' }));
    await screen.findByText('Earlier answer');
    expect((composer() as HTMLTextAreaElement).value).toBe('half-written thought');
  });
});

/** A route that holds the creation of conversations until `release` is called. */
function slowCreation() {
  let release: () => void = () => undefined;
  const route: Route = (url, init) => {
    if (url.pathname !== '/api/v1/conversations' || init.method !== 'POST') return undefined;
    return new Promise<Response | undefined>((resolve) => {
      release = () => resolve(server.route(url, init) as Response);
    });
  };
  return { route, release: () => release() };
}

/**
 * Sends `text` to the open conversation, which turns out deleted elsewhere, then sends it again:
 * that starts a new chat, whose creation `creation` holds.
 */
async function sendIntoANewChat(text: string) {
  server.onStream(() => json({ status: 'error', message: 'Conversation not found.', code: 'conversation_not_found' }, 404));
  await renderLoaded();
  fireEvent.change(composer(), { target: { value: text } });
  fireEvent.keyDown(composer(), { key: 'Enter' });
  await screen.findByText(/deleted, perhaps in another tab/);
  fireEvent.keyDown(composer(), { key: 'Enter' });
  await screen.findByRole('button', { name: 'Stop' });
}

describe('a message sent while its new chat is being created', () => {
  it('stopped meanwhile, is kept as the new chat\'s draft, not as the next new chat\'s', async () => {
    const creation = slowCreation();
    vi.stubGlobal('fetch', mockFetch([creation.route, server.route]).fn);
    history.replaceState(null, '', '/#/new');
    render(<App />);
    await screen.findByText('Start a new conversation');
    fireEvent.change(composer(), { target: { value: 'Stopped while created' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    fireEvent.click(await screen.findByRole('button', { name: 'Stop' }));
    await act(async () => creation.release());
    expect(await screen.findByText(/Stopped before sending/)).toBeTruthy();
    const created = server.conversations.at(-1)?.id ?? '';
    await waitFor(() => expect(location.hash).toBe(`#/c/${created}`));
    expect(loadDraft(created)).toBe('Stopped while created');
    expect(loadDraft(null)).toBe('');
  });

  it('goes back into the new chat\'s message box after a reload that cut it off, with what was typed since', async () => {
    const creation = slowCreation();
    vi.stubGlobal('fetch', mockFetch([creation.route, server.route]).fn);
    history.replaceState(null, '', '/#/new');
    const page = render(<App />);
    await screen.findByText('Start a new conversation');
    fireEvent.change(composer(), { target: { value: 'First words of a new chat' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await screen.findByRole('button', { name: 'Stop' });
    fireEvent.change(composer(), { target: { value: 'typed meanwhile' } });
    // The reload: the page and its send end, and the next page starts as main.tsx starts it.
    page.unmount();
    restoreFirstSendsCutOff();
    render(<App />);
    await screen.findByText('Start a new conversation');
    expect((composer() as HTMLTextAreaElement).value).toBe('First words of a new chat\ntyped meanwhile');
    expect(server.conversations.some((c) => c.title === 'First words of a new chat')).toBe(false);
  });

  it('cut off by a reload after the server made its chat, sent again from the next page, goes into that chat and makes no other', async () => {
    // The create reaches the server, which makes the chat; the page that sent it never hears.
    let made = '';
    const answerLost: Route = async (url, init) => {
      if (url.pathname !== '/api/v1/conversations' || init.method !== 'POST') return undefined;
      const answer = (await server.route(url, init)) as Response;
      made = ((await answer.json()) as Conversation).id;
      return new Promise<Response>(() => undefined);
    };
    vi.stubGlobal('fetch', mockFetch([answerLost, server.route]).fn);
    history.replaceState(null, '', '/#/new');
    const page = render(<App />);
    await screen.findByText('Start a new conversation');
    fireEvent.change(composer(), { target: { value: 'Made before the reload' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await waitFor(() => expect(made).not.toBe(''));
    page.unmount();
    restoreFirstSendsCutOff();
    vi.stubGlobal('fetch', mockFetch([server.route]).fn);
    const chats = server.conversations.length;
    const done = sseResponse();
    server.onStream(() => done.response);
    render(<App />);
    await screen.findByText('Start a new conversation');
    expect((composer() as HTMLTextAreaElement).value).toBe('Made before the reload');
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await finishInNewestChat(done, 'Made before the reload');
    expect(location.hash).toBe(`#/c/${made}`);
    expect(server.conversations).toHaveLength(chats);
    expect(server.messages[made]?.map((m) => m.content)).toContain('Made before the reload');
  });

  it('whose create got no answer is sent again into the chat that create made, leaving no empty one', async () => {
    let answersLost = 1;
    const fetched = mockFetch([
      async (url, init) => {
        if (url.pathname !== '/api/v1/conversations' || init.method !== 'POST' || answersLost === 0) return undefined;
        answersLost -= 1;
        await server.route(url, init);
        throw new TypeError('Failed to fetch');
      },
      server.route,
    ]);
    vi.stubGlobal('fetch', fetched.fn);
    history.replaceState(null, '', '/#/new');
    render(<App />);
    await screen.findByText('Start a new conversation');
    const chats = server.conversations.length;
    fireEvent.change(composer(), { target: { value: 'Lost on the way back' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    expect((await screen.findByRole('alert')).textContent).toContain('Cannot reach the server');
    expect((composer() as HTMLTextAreaElement).value).toBe('Lost on the way back');
    const done = sseResponse();
    server.onStream(() => done.response);
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await finishInNewestChat(done, 'Lost on the way back');
    const creates = fetched.calls.filter((c) => c.method === 'POST' && c.url === '/api/v1/conversations');
    expect(creates).toHaveLength(2);
    expect(new Set(creates.map((c) => (c.body as { id: string }).id)).size).toBe(1);
    expect(server.conversations).toHaveLength(chats + 1);
  });

  it.each([
    // A create that got no answer had made the chat, which was then deleted in another tab.
    ['deleted since', 'c1', () => fetch('/api/v1/conversations/c1', { method: 'DELETE' })],
    // A create that got no answer had made the chat, which was then opened from the list and written in.
    ['written in since', 'c2', () => Promise.resolve()],
  ])('asking again for a chat %s makes a new one', async (_, kept, meanwhile) => {
    const fetched = mockFetch([server.route]);
    vi.stubGlobal('fetch', fetched.fn);
    keepChatToCreate(null, kept);
    await meanwhile();
    history.replaceState(null, '', '/#/new');
    render(<App />);
    await screen.findByText('Start a new conversation');
    const chats = server.conversations.length;
    const done = sseResponse();
    server.onStream(() => done.response);
    fireEvent.change(composer(), { target: { value: 'Into a chat of its own' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await waitFor(() => expect(server.conversations).toHaveLength(chats + 1));
    await finishInNewestChat(done, 'Into a chat of its own');
    const creates = fetched.calls.filter((c) => c.method === 'POST' && c.url === '/api/v1/conversations');
    const ids = creates.map((c) => (c.body as { id: string }).id);
    expect(ids).toHaveLength(2);
    expect(ids[0]).toBe(kept);
    expect(ids[1]).not.toBe(kept);
    expect(server.messages[kept]?.map((m) => m.content) ?? []).not.toContain('Into a chat of its own');
    expect(screen.queryByRole('alert')).toBeNull();
  });

  it('and a second first send from the new chat while it is created make two chats', async () => {
    const held: (() => void)[] = [];
    const fetched = mockFetch([
      (url, init) => {
        if (url.pathname !== '/api/v1/conversations' || init.method !== 'POST') return undefined;
        return new Promise<Response | undefined>((resolve) => held.push(() => resolve(server.route(url, init) as Response)));
      },
      server.route,
    ]);
    vi.stubGlobal('fetch', fetched.fn);
    server.onStream(() => sseResponse().response);
    // The first send asks for the chat a create that got no answer may have made; the second, sent
    // while the first still creates, for a chat of its own.
    keepChatToCreate(null, 'kept');
    await renderLoaded();
    const chats = server.conversations.length;
    for (const text of ['One new chat', 'Another new chat']) {
      await openNewChat();
      fireEvent.change(composer(), { target: { value: text } });
      fireEvent.keyDown(composer(), { key: 'Enter' });
      await screen.findByRole('button', { name: 'Stop' });
      fireEvent.click(screen.getByRole('button', { name: 'Older chat' }));
      await screen.findByText('No messages yet');
    }
    await act(async () => held.forEach((release) => release()));
    const creates = fetched.calls.filter((c) => c.method === 'POST' && c.url === '/api/v1/conversations');
    const ids = creates.map((c) => (c.body as { id: string }).id);
    expect(ids[0]).toBe('kept');
    expect(new Set(ids).size).toBe(2);
    expect(server.conversations).toHaveLength(chats + 2);
  });

  it('reloaded as its chat is created, comes back to that chat, where the message is looked for, and is not offered again', () =>
    inFakeTime(async () => {
      const creation = slowCreation();
      let cut: ((error: Error) => void) | undefined;
      server.onStream(() => new Promise<Response>((_resolve, reject) => (cut = reject)));
      vi.stubGlobal('fetch', mockFetch([creation.route, server.route]).fn);
      history.replaceState(null, '', '/#/new');
      const page = render(<App />);
      await screen.findByText('Start a new conversation');
      fireEvent.change(composer(), { target: { value: 'Sent as the page reloads' } });
      fireEvent.keyDown(composer(), { key: 'Enter' });
      await screen.findByRole('button', { name: 'Stop' });
      window.dispatchEvent(new Event('beforeunload'));
      let id = '';
      try {
        // The old page lives on until the next one arrives, on a slow network longer than the page
        // takes itself to be leaving: the chat is created and the message goes.
        await passTime(1_500);
        await act(async () => creation.release());
        id = server.conversations.at(-1)?.id ?? '';
        await waitFor(() => expect(cut).toBeDefined());
        // As Chromium does once the next page arrives: the request fails like a lost connection.
        window.dispatchEvent(new Event('pagehide'));
        await act(async () => cut?.(new TypeError('Failed to fetch')));
        page.unmount();
      } finally {
        window.dispatchEvent(new Event('pageshow'));
      }
      // The reload goes to the address it began with; the server had the message and stored its reply.
      history.replaceState(null, '', '/#/new');
      server.messages[id]?.push(msg(id, 'user', 'Sent as the page reloads'), msg(id, 'assistant', 'Noted.'));
      restoreFirstSendsCutOff();
      openChatCreatedAsPageWasLeft();
      render(<App />);
      expect(await within(screen.getByRole('log')).findByText('Noted.')).toBeTruthy();
      expect(location.hash).toBe(`#/c/${id}`);
      expect((composer() as HTMLTextAreaElement).value).toBe('');
      expect(loadDraft(null)).toBe('');
      await waitFor(() => expect(server.conversations.find((c) => c.id === id)?.title).toBe('Sent as the page reloads'));
      expect(sentHere(id, 'Sent as the page reloads')).toBe(false);
    }));

  it('comes back in the message box when its chat was deleted before the reload came back to it', async () => {
    // Created, then deleted in another tab before the reloaded page opened it.
    markSent('deleted-meanwhile', 'Sent into a chat deleted since');
    history.replaceState(null, '', '/#/c/deleted-meanwhile');
    render(<App />);
    await waitFor(() => expect((composer() as HTMLTextAreaElement).value).toBe('Sent into a chat deleted since'));
    expect(screen.getAllByRole('alert').map((a) => a.textContent)).toEqual([
      'This conversation does not exist (any more). Pick another one or start a new chat.',
      'The message you sent here before it was deleted is back in the message box: sending it starts a new chat.',
    ]);
    expect(sentHere('deleted-meanwhile', 'Sent into a chat deleted since')).toBe(false);
    history.replaceState(null, '', '/#/new');
  });

  /** Sends `text` from a new chat and sees its reply stored; returns the page, to be left. */
  async function sendFromANewChat(text: string) {
    history.replaceState(null, '', '/#/new');
    const page = render(<App />);
    await screen.findByText('Start a new conversation');
    const done = sseResponse();
    server.onStream(() => done.response);
    fireEvent.change(composer(), { target: { value: text } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await finishInNewestChat(done, text);
    return page;
  }

  it('a reload from a new chat opened after the first send goes to the new chat, not back to the first', async () => {
    const page = await sendFromANewChat('Sent before the reload');
    await openNewChat();
    page.unmount();
    expect(location.hash).toBe('#/new');
    restoreFirstSendsCutOff();
    openChatCreatedAsPageWasLeft();
    render(<App />);
    await screen.findByText('Start a new conversation');
    expect(location.hash).toBe('#/new');
  });

  it('leaves nothing to restore once its chat holds it', async () => {
    (await sendFromANewChat('Sent in full')).unmount();
    restoreFirstSendsCutOff();
    render(<App />);
    await screen.findByText('Noted.');
    expect((composer() as HTMLTextAreaElement).value).toBe('');
    history.replaceState(null, '', '/#/new');
  });

  it('is still sent after the user left, and if refused then, waits as that chat\'s draft', async () => {
    const creation = slowCreation();
    const fetched = mockFetch([creation.route, server.route]);
    vi.stubGlobal('fetch', fetched.fn);
    await sendIntoANewChat('sent while leaving');
    server.onStream(() => json({ status: 'error', message: 'Storage is unavailable.', code: 'storage_unavailable' }, 503));
    fireEvent.click(screen.getByRole('button', { name: 'Older chat' }));
    await screen.findByText('No messages yet');
    await act(async () => creation.release());
    const id = server.conversations.at(-1)?.id ?? '';
    await waitFor(() => expect(fetched.calls.some((c) => c.method === 'POST' && c.url === `/api/v1/conversations/${id}/messages`)).toBe(true));
    expect((composer() as HTMLTextAreaElement).value).toBe('');
    const list = within(screen.getByRole('navigation', { name: 'Conversations' })).getByRole('list');
    fireEvent.click(await within(list).findByRole('button', { name: 'New chat' }));
    await waitFor(() => expect((composer() as HTMLTextAreaElement).value).toBe('sent while leaving'));
  });

  it('stopped and then left while its chat is created, goes back where it was written, and is sent again into that chat', async () => {
    const creation = slowCreation();
    vi.stubGlobal('fetch', mockFetch([creation.route, server.route]).fn);
    await renderLoaded();
    await openNewChat();
    fireEvent.change(composer(), { target: { value: 'Stopped, then left' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    fireEvent.click(await screen.findByRole('button', { name: 'Stop' }));
    fireEvent.click(screen.getByRole('button', { name: 'Older chat' }));
    await screen.findByText('No messages yet');
    await act(async () => creation.release());
    const made = server.conversations.at(-1)?.id ?? '';
    const chats = server.conversations.length;
    await openNewChat();
    await waitFor(() => expect((composer() as HTMLTextAreaElement).value).toBe('Stopped, then left'));
    vi.stubGlobal('fetch', mockFetch([server.route]).fn);
    const done = sseResponse();
    server.onStream(() => done.response);
    // Enter so soon after Stop is held back, as the second press of a double press.
    await act(() => new Promise((resolve) => setTimeout(resolve, 650)));
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await finishInNewestChat(done, 'Stopped, then left');
    await waitFor(() => expect(location.hash).toBe(`#/c/${made}`));
    expect(server.conversations).toHaveLength(chats);
  });

  it.each([
    ['another conversation is opened', () => fireEvent.click(screen.getByRole('button', { name: 'Older chat' }))],
    ['New chat is clicked again', () => openNewChat()],
  ])('is sent into its own chat, named after it, when %s meanwhile', async (_, leave) => {
    const creation = slowCreation();
    const fetched = mockFetch([creation.route, server.route]);
    vi.stubGlobal('fetch', fetched.fn);
    const reply = sseResponse();
    server.onStream(() => reply.response);
    await renderLoaded();
    await openNewChat();
    fireEvent.change(composer(), { target: { value: 'Sent, then left' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await screen.findByRole('button', { name: 'Stop' });
    await leave();
    const hash = window.location.hash;
    await act(async () => creation.release());
    const nav = within(screen.getByRole('navigation', { name: 'Conversations' }));
    expect(await nav.findByRole('button', { name: 'Sent, then left' })).toBeTruthy();
    const id = server.conversations.at(-1)?.id ?? '';
    expect(fetched.calls.filter((c) => c.method === 'POST' && c.url === `/api/v1/conversations/${id}/messages`)).toHaveLength(1);
    expect(window.location.hash).toBe(hash);
    expect((composer() as HTMLTextAreaElement).value).toBe('');
    server.messages[id]?.push(msg(id, 'user', 'Sent, then left'), msg(id, 'assistant', 'Answered unseen.'));
    fireEvent.click(nav.getByRole('button', { name: 'Sent, then left' }));
    expect(await screen.findByText('Answered unseen.')).toBeTruthy();
    expect((composer() as HTMLTextAreaElement).value).toBe('');
  });

  it('that could not be created leaves its alert behind when New chat is clicked again, its text kept', async () => {
    vi.stubGlobal(
      'fetch',
      mockFetch([
        (url, init) => {
          if (url.pathname === '/api/v1/conversations' && init.method === 'POST') throw new TypeError('Failed to fetch');
          return undefined;
        },
        server.route,
      ]).fn,
    );
    await renderLoaded();
    await openNewChat();
    fireEvent.change(composer(), { target: { value: 'Unsent first words' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    expect((await screen.findByRole('alert')).textContent).toContain('Cannot reach the server');
    await openNewChat();
    await waitFor(() => expect(screen.queryByRole('alert')).toBeNull());
    expect((composer() as HTMLTextAreaElement).value).toBe('Unsent first words');
  });

  /** Sends `text` in the open chat and opens another before the server answers the send. */
  async function sendThenLeaveBeforeItIsTaken(text: string) {
    let release!: (response: Response) => void;
    let signal: AbortSignal | null | undefined;
    server.onStream((_id, _content, init) => {
      signal = init.signal;
      return new Promise<Response>((resolve) => (release = resolve));
    });
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: text } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await waitFor(() => expect(signal).toBeDefined());
    fireEvent.click(screen.getByRole('button', { name: 'Older chat' }));
    await screen.findByText('No messages yet');
    return { release, aborted: () => signal?.aborted };
  }

  it('is not cut by leaving before the server takes it; refused then, its text waits in that chat', async () => {
    const { release, aborted } = await sendThenLeaveBeforeItIsTaken('Kept if refused');
    expect(aborted()).toBe(false);
    await act(async () => release(json({ status: 'error', message: 'The assistant is busy.', code: 'overloaded' }, 503, { 'Retry-After': '1' })));
    expect((composer() as HTMLTextAreaElement).value).toBe('');
    fireEvent.click(screen.getByRole('button', { name: 'Recent chat' }));
    await waitFor(() => expect((composer() as HTMLTextAreaElement).value).toBe('Kept if refused'));
  });

  it('streams here after all when the user is back before the server takes it', async () => {
    const sse = sseResponse();
    const { release, aborted } = await sendThenLeaveBeforeItIsTaken('Taken on return');
    fireEvent.click(screen.getByRole('button', { name: 'Recent chat' }));
    await within(screen.getByRole('log')).findByText('Earlier answer');
    await act(async () => release(sse.response));
    const log = screen.getByRole('log');
    const G = 'cccccccc-0000-4000-8000-000000000003';
    await act(async () =>
      sse.send(
        `id: ${G}:1\nevent: start\ndata: ${JSON.stringify({ generation_id: G, conversation_id: 'c2', content: 'Taken on return' })}\n\n` +
          `id: ${G}:2\nevent: delta\ndata: {"text":"Right here"}\n\n`,
      ),
    );
    expect(await within(log).findByText('Right here')).toBeTruthy();
    expect(aborted()).toBe(false);
    const done = { user_message: msg('c2', 'user', 'Taken on return'), assistant_message: msg('c2', 'assistant', 'Right here.') };
    await act(async () => {
      sse.send(`id: ${G}:3\nevent: done\ndata: ${JSON.stringify(done)}\n\n`);
      sse.close();
    });
    expect(await within(log).findByText('Right here.')).toBeTruthy();
    expect(within(log).getAllByText('Taken on return')).toHaveLength(1);
  });

  it('shown again on return, it looks for another reply in progress once it ends', async () => {
    let follows = 0;
    server.onFollow((id) => {
      if (id === 'c2') follows += 1;
      return new Response(null, { status: 204 });
    });
    const sse = sseResponse();
    const { release } = await sendThenLeaveBeforeItIsTaken('Shown again');
    fireEvent.click(screen.getByRole('button', { name: 'Recent chat' }));
    const log = screen.getByRole('log');
    await within(log).findByText('Earlier answer');
    // The look on return gave way to the message shown again.
    expect(follows).toBe(1);
    await act(async () => release(sse.response));
    const done = { user_message: msg('c2', 'user', 'Shown again'), assistant_message: msg('c2', 'assistant', 'Done here.') };
    await act(async () => {
      sse.send(`event: done\ndata: ${JSON.stringify(done)}\n\n`);
      sse.close();
    });
    expect(await within(log).findByText('Done here.')).toBeTruthy();
    await waitFor(() => expect(follows).toBe(2));
  });

  it('is read no further once the server takes it after the user left', async () => {
    const sse = sseResponse();
    const { release, aborted } = await sendThenLeaveBeforeItIsTaken('Taken while away');
    await act(async () => release(sse.response));
    await waitFor(() => expect(aborted()).toBe(true));
    // The server finished the reply meanwhile and stored the exchange.
    server.messages.c2?.push(msg('c2', 'user', 'Taken while away'), msg('c2', 'assistant', 'Answered while away.'));
    fireEvent.click(screen.getByRole('button', { name: 'Recent chat' }));
    expect(await within(screen.getByRole('log')).findByText('Answered while away.')).toBeTruthy();
    await waitFor(() => expect(sentHere('c2', 'Taken while away')).toBe(false));
    expect((composer() as HTMLTextAreaElement).value).toBe('');
    expect(screen.queryByRole('alert')).toBeNull();
  });

  it('whose reply failed while the user was away gives the text back on return', async () => {
    const sse = sseResponse();
    const { release } = await sendThenLeaveBeforeItIsTaken('Failed while away');
    await act(async () => release(sse.response));
    // The reply failed meanwhile: nothing stored, and nothing in progress (204).
    fireEvent.click(screen.getByRole('button', { name: 'Recent chat' }));
    await waitFor(() => expect((composer() as HTMLTextAreaElement).value).toBe('Failed while away'));
    expect(screen.getByRole('alert').textContent).toContain('was not stored');
    expect(sentHere('c2', 'Failed while away')).toBe(false);
  });

  it('comes back at once on Stop, as nothing was sent', async () => {
    const creation = slowCreation();
    const fetch = mockFetch([creation.route, server.route]);
    vi.stubGlobal('fetch', fetch.fn);
    await sendIntoANewChat('stopped early');
    const sends = () => fetch.calls.filter((c) => c.method === 'POST' && c.url.endsWith('/messages')).length;
    expect(sends()).toBe(1);
    fireEvent.click(screen.getByRole('button', { name: 'Stop' }));
    await act(async () => creation.release());
    expect(await screen.findByText(/Stopped before sending/)).toBeTruthy();
    expect((composer() as HTMLTextAreaElement).value).toBe('stopped early');
    expect(sends()).toBe(1);
  });
});

describe('a send interrupted before its first event', () => {
  it('is looked for in the conversation, not given back as failed', async () => {
    const sse = sseResponse();
    server.onStream(() => sse.response);
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Are you there?' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    // The server took it, then could not read the reply's log back.
    server.messages.c2?.push(msg('c2', 'user', 'Are you there?'), msg('c2', 'assistant', 'Always.'));
    await act(async () => {
      sse.send('event: error\ndata: {"message":"The reply stream was interrupted.","code":"interrupted"}\n\n');
      sse.close();
    });
    expect(await within(screen.getByRole('log')).findByText('Always.', {}, { timeout: 4000 })).toBeTruthy();
    expect((composer() as HTMLTextAreaElement).value).toBe('');
    expect(screen.queryByText(/Sending failed/)).toBeNull();
  });
});

const olderPage = [msg('c2', 'user', 'Oldest question'), msg('c2', 'assistant', 'Oldest answer')];
const newerPage = [msg('c2', 'user', 'Newer question'), msg('c2', 'assistant', 'Newer answer')];

/** The recent chat's newest page (`newerPage`, with a cursor to more), and `answerOlder` for the page before it. */
function newestThenOlder(answerOlder: () => Response | Promise<Response>): Route {
  return (url) => {
    if (url.pathname !== '/api/v1/conversations/c2/messages') return undefined;
    return url.searchParams.get('before') === 'cur1' ? answerOlder() : json({ items: newerPage, next_cursor: 'cur1' });
  };
}

/**
 * Runs `body` with a layout, which jsdom has not: every message 100px high in a log of 150px, so
 * the log scrolls and the older page waits to be asked for.
 */
async function withLogLayout(body: () => Promise<void>) {
  const height = vi.spyOn(HTMLElement.prototype, 'scrollHeight', 'get').mockImplementation(function (this: HTMLElement) {
    return this.querySelectorAll('article').length * 100;
  });
  const client = vi.spyOn(HTMLElement.prototype, 'clientHeight', 'get').mockReturnValue(150);
  try {
    await body();
  } finally {
    height.mockRestore();
    client.mockRestore();
  }
}

describe('scrolling', () => {
  it('keeps the newest message in sight when the view gets shorter at the bottom, and not when scrolled up', async () => {
    const resized: (() => void)[] = [];
    vi.stubGlobal(
      'ResizeObserver',
      class {
        constructor(callback: () => void) {
          resized.push(callback);
        }
        observe() {}
        unobserve() {}
        disconnect() {}
      },
    );
    await withLogLayout(async () => {
      await renderLoaded();
      await screen.findByText('Earlier answer');
      const log = screen.getByRole('log');
      // At the bottom of 200px seen through 150px; then the window gets shorter.
      log.scrollTop = 50;
      fireEvent.scroll(log);
      act(() => resized.forEach((callback) => callback()));
      expect(log.scrollTop).toBe(200);

      log.scrollTop = 0;
      fireEvent.scroll(log);
      act(() => resized.forEach((callback) => callback()));
      expect(log.scrollTop).toBe(0);
    });
  });

  it('follows a message drawn taller below the view, also when the scroll event comes after it grew', async () => {
    const resized: (() => void)[] = [];
    const observed = new Set<Element>();
    vi.stubGlobal(
      'ResizeObserver',
      class {
        constructor(callback: () => void) {
          resized.push(callback);
        }
        observe(target: Element) {
          observed.add(target);
        }
        unobserve(target: Element) {
          observed.delete(target);
        }
        disconnect() {
          observed.clear();
        }
      },
    );
    await withLogLayout(async () => {
      await renderLoaded();
      const answer = (await screen.findByText('Earlier answer')).closest('article');
      // The messages are watched for their size, not only the view.
      expect(answer).not.toBeNull();
      expect(observed.has(answer as Element)).toBe(true);
      const log = screen.getByRole('log');
      log.scrollTop = 50;
      fireEvent.scroll(log);
      // At the bottom of 200px seen through 150px, the answer is drawn 100px taller (a whole code
      // block at once) before the event of the last scroll to the bottom comes.
      let grown = 100;
      vi.spyOn(HTMLElement.prototype, 'scrollHeight', 'get').mockImplementation(function (this: HTMLElement) {
        return this.querySelectorAll('article').length * 100 + grown;
      });
      fireEvent.scroll(log);
      act(() => resized.forEach((callback) => callback()));
      expect(log.scrollTop).toBe(300);

      // Scrolled up by the reader: what grows below is left there.
      log.scrollTop = 100;
      fireEvent.scroll(log);
      grown = 200;
      act(() => resized.forEach((callback) => callback()));
      expect(log.scrollTop).toBe(100);
    });
  });
});

describe('jump to latest', () => {
  it('shows once the newest messages are out of sight, and takes the view and the focus back to them', async () => {
    const three = [1, 2, 3].flatMap((i) => [msg('c2', 'user', `Question ${i}`), msg('c2', 'assistant', `Answer ${i}`)]);
    const sixMessages: Route = (url) => (url.pathname === '/api/v1/conversations/c2/messages' ? json({ items: three, next_cursor: null }) : undefined);
    vi.stubGlobal('fetch', mockFetch([sixMessages, server.route]).fn);
    await withLogLayout(async () => {
      render(<App />);
      await screen.findByText('Answer 3');
      const log = screen.getByRole('log');
      // 600px seen through 150px: 450px from the top is the bottom.
      expect(log.scrollTop).toBe(600);
      log.scrollTop = 300;
      fireEvent.scroll(log);
      expect(screen.queryByRole('button', { name: 'Jump to latest' })).toBeNull();

      log.scrollTop = 100;
      fireEvent.scroll(log);
      const jump = await screen.findByRole('button', { name: 'Jump to latest' });
      jump.focus();
      fireEvent.click(jump);
      expect(log.scrollTop).toBe(600);
      const box = screen.getByRole('textbox', { name: /message/i });
      expect(document.activeElement).toBe(box);
      expect(screen.queryByRole('button', { name: 'Jump to latest' })).toBeNull();

      // A tap that does not focus the button (Safari) leaves the focus where it was.
      log.focus();
      log.scrollTop = 100;
      fireEvent.scroll(log);
      fireEvent.click(await screen.findByRole('button', { name: 'Jump to latest' }));
      expect(log.scrollTop).toBe(600);
      expect(document.activeElement).toBe(log);
    });
  });
});

describe('older messages', () => {
  it('load on scrolling up, go above the others, and keep the view where it was', async () => {
    const olderAsked = vi.fn(() => json({ items: olderPage, next_cursor: null }));
    vi.stubGlobal('fetch', mockFetch([newestThenOlder(olderAsked), server.route]).fn);
    await withLogLayout(async () => {
      render(<App />);
      await screen.findByText('Newer answer');
      const log = screen.getByRole('log');
      log.scrollTop = 0;
      fireEvent.scroll(log);
      await screen.findByText('Oldest answer');
      const texts = [...log.querySelectorAll('article')].map((a) => a.querySelector('.message-body')?.textContent);
      expect(texts).toEqual(['Oldest question', 'Oldest answer', 'Newer question', 'Newer answer']);
      // Pages loaded are shown, not read out: no live region holds them.
      expect(log.getAttribute('aria-live')).toBe('off');
      expect(screen.getByTestId('reply-announcer').textContent).toBe('');
      // Two messages (200px) went in above: the view moved down by exactly that much.
      expect(log.scrollTop).toBe(200);
      expect(screen.queryByRole('button', { name: 'Load older messages' })).toBeNull();
      expect(olderAsked).toHaveBeenCalled();
    });
  });

  it('keep the focus on their button while loading, then on the messages once the oldest came', async () => {
    let answerOlder: () => void = () => undefined;
    const held = () => new Promise<Response>((resolve) => (answerOlder = () => resolve(json({ items: olderPage, next_cursor: null }))));
    vi.stubGlobal('fetch', mockFetch([newestThenOlder(held), server.route]).fn);
    await withLogLayout(async () => {
      render(<App />);
      await screen.findByText('Newer answer');
      const button = await screen.findByRole('button', { name: 'Load older messages' });
      button.focus();
      fireEvent.click(button);
      const loading = await screen.findByRole('button', { name: 'Loading older messages…' });
      expect(document.activeElement).toBe(loading);
      expect(loading.getAttribute('aria-disabled')).toBe('true');
      fireEvent.click(loading);
      await act(async () => answerOlder());
      await screen.findByText('Oldest answer');
      expect(screen.queryByRole('button', { name: /older messages/ })).toBeNull();
      await waitFor(() => expect(document.activeElement).toBe(screen.getByRole('log')));
    });
  });

  it('that fail to load move the focus to Retry', async () => {
    const failing = () => json({ status: 'error', message: 'Storage is unavailable.', code: 'storage_unavailable' }, 503);
    vi.stubGlobal('fetch', mockFetch([newestThenOlder(failing), server.route]).fn);
    await withLogLayout(async () => {
      render(<App />);
      const button = await screen.findByRole('button', { name: 'Load older messages' });
      button.focus();
      fireEvent.click(button);
      await screen.findByText(/Could not load older messages/);
      await waitFor(() => expect(document.activeElement).toBe(within(screen.getByRole('log')).getByRole('button', { name: 'Retry' })));
    });
  });
});

describe('unknown conversation', () => {
  it('says so, without a pointless Retry, when the URL names a deleted conversation', async () => {
    history.replaceState(null, '', '/#/c/gone');
    render(<App />);
    expect(await screen.findByText(/This conversation does not exist/)).toBeTruthy();
    expect(screen.queryByRole('button', { name: 'Retry' })).toBeNull();
    expect(screen.getByRole('heading', { level: 1 }).textContent).toBe('Conversation not found');
  });

  it('says so, without a pointless Retry, when the URL names no conversation id at all', async () => {
    vi.stubGlobal(
      'fetch',
      mockFetch([
        (url) =>
          url.pathname.startsWith('/api/v1/conversations/not-an-id')
            ? json({ status: 'error', message: 'The conversation id must be a UUID.', code: 'invalid_id' }, 400)
            : undefined,
        server.route,
      ]).fn,
    );
    history.replaceState(null, '', '/#/c/not-an-id');
    try {
      render(<App />);
      expect(await screen.findByText(/does not exist/)).toBeTruthy();
      expect(within(screen.getByRole('log')).queryByRole('button', { name: 'Retry' })).toBeNull();
      expect(screen.getByRole('heading', { level: 1 }).textContent).toBe('Conversation not found');
    } finally {
      history.replaceState(null, '', '/');
    }
  });

  it('a message sent from a deleted conversation\'s link starts a new chat at the first try', async () => {
    const done = sseResponse();
    server.onStream(() => done.response);
    history.replaceState(null, '', '/#/c/gone');
    render(<App />);
    await screen.findByText(/This conversation does not exist/);
    const before = server.conversations.length;
    fireEvent.change(composer(), { target: { value: 'Hello again' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await waitFor(() => expect(server.conversations.length).toBe(before + 1));
    const id = server.conversations.at(-1)?.id ?? '';
    const exchange = { user_message: msg(id, 'user', 'Hello again'), assistant_message: msg(id, 'assistant', 'Welcome back.') };
    await act(async () => {
      done.send(`event: done\ndata: ${JSON.stringify(exchange)}\n\n`);
      done.close();
    });
    expect(await within(screen.getByRole('log')).findByText('Welcome back.')).toBeTruthy();
    expect(screen.queryByText(/This conversation does not exist/)).toBeNull();
    const sends = fetchMock.calls.filter((c) => c.method === 'POST' && c.url.endsWith('/messages'));
    expect(sends.map((c) => c.url)).toEqual([`/api/v1/conversations/${id}/messages`]);
  });
});

describe('a send while the messages load', () => {
  it('keeps the exchange answered before the page arrived, after the page', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const done = sseResponse();
    server.onStream(() => done.response);
    vi.stubGlobal(
      'fetch',
      mockFetch([
        async (url, init) => {
          if (url.pathname !== '/api/v1/conversations/c2/messages' || (init.method ?? 'GET') !== 'GET') return undefined;
          // The page as it was when asked for, delivered after the reply.
          const page = await server.route(url, init);
          await gate;
          return page;
        },
        server.route,
      ]).fn,
    );
    render(<App />);
    await screen.findByText('Loading messages…');
    fireEvent.change(composer(), { target: { value: 'Quick one' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    const exchange = { user_message: msg('c2', 'user', 'Quick one'), assistant_message: msg('c2', 'assistant', 'Quick answer.') };
    await act(async () => {
      done.send(`event: done\ndata: ${JSON.stringify(exchange)}\n\n`);
      done.close();
    });
    await act(async () => release());
    const log = screen.getByRole('log');
    await within(log).findByText('Earlier answer');
    const texts = [...log.querySelectorAll('article')].map((a) => a.querySelector('.message-body')?.textContent);
    expect(texts.slice(-2)).toEqual(['Quick one', 'Quick answer.']);
    expect(texts).toContain('Earlier answer');
  });
});

describe('new chat during the first load', () => {
  it('keeps open a new chat chosen before the list arrived', async () => {
    const release = holdConversationList();
    render(<App />);
    await openNewChat();
    await act(async () => release());
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    await within(nav).findByRole('button', { name: 'Recent chat' });
    expect(screen.getByText('Start a new conversation')).toBeTruthy();
    expect(screen.queryByText('Earlier answer')).toBeNull();
  });
});

describe('following a reply in progress', () => {
  const G = 'bbbbbbbb-0000-4000-8000-000000000002';
  const ev = (seq: number, event: string, data: unknown) => `id: ${G}:${seq}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
  const start = (content: string) => ev(1, 'start', { generation_id: G, conversation_id: 'c2', content });
  /** Another generation of c2: the same reply started over, or another one running. */
  const H = 'cccccccc-0000-4000-8000-000000000003';
  const evH = (seq: number, event: string, data: unknown) => `id: ${H}:${seq}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
  const assistants = (log: HTMLElement) => [...log.querySelectorAll('article[aria-label="Assistant"] .message-body')].map((e) => e.textContent);

  let delays: number[];
  beforeEach(() => {
    delays = api.retryDelaysMs;
    api.retryDelaysMs = [5, 5, 5];
  });
  afterEach(() => {
    api.retryDelaysMs = delays;
  });

  it('on opening: shows the user message from start and the reply so far, with Stop, then the stored pair', async () => {
    const sse = sseResponse();
    server.onFollow(() => sse.response);
    await renderLoaded();
    await act(async () => sse.send(start('What happened?') + ev(2, 'delta', { text: 'It all ' }) + ev(3, 'delta', { text: 'began' })));
    const log = screen.getByRole('log');
    expect(await within(log).findByText('What happened?')).toBeTruthy();
    expect(await within(log).findByText('It all began')).toBeTruthy();
    expect(await screen.findByRole('button', { name: 'Stop' })).toBeTruthy();

    await act(async () => sse.send(ev(4, 'delta', { text: ' long ago.' })));
    expect(await within(log).findByText('It all began long ago.')).toBeTruthy();
    const done = { user_message: msg('c2', 'user', 'What happened?'), assistant_message: msg('c2', 'assistant', 'It all began long ago.') };
    await act(async () => {
      sse.send(ev(5, 'done', done));
      sse.close();
    });
    await waitFor(() => expect(screen.queryByRole('button', { name: 'Stop' })).toBeNull());
    expect(within(log).getAllByText('What happened?')).toHaveLength(1);
    expect(assistants(log)).toEqual(['Earlier answer', 'It all began long ago.']);
    expect(log.querySelector('article[data-state]')).toBeNull();
    const follow = fetchMock.calls.findIndex((c) => c.url === '/api/v1/conversations/c2/stream');
    const messages = fetchMock.calls.findIndex((c) => c.url.startsWith('/api/v1/conversations/c2/messages'));
    expect(messages).toBeGreaterThanOrEqual(0);
    expect(follow).toBeGreaterThan(messages);
  });

  it('a check refused for the moment (429) is asked again, and the reply in progress then shows', async () => {
    const sse = sseResponse();
    let asked = 0;
    server.onFollow(() => {
      asked += 1;
      return asked === 1 ? json({ status: 'error', message: 'Too many streams.', code: 'too_many_streams' }, 429, { 'Retry-After': '1' }) : sse.response;
    });
    await renderLoaded();
    await waitFor(() => expect(asked).toBe(1));
    await act(async () => sse.send(start('Asked twice') + ev(2, 'delta', { text: 'Shown at last' })));
    expect(await screen.findByText('Shown at last', undefined, { timeout: 3000 })).toBeTruthy();
    expect(asked).toBe(2);
  });

  it('on 204 shows nothing more than the stored messages', async () => {
    await renderLoaded();
    await waitFor(() => expect(fetchMock.calls.some((c) => c.url === '/api/v1/conversations/c2/stream')).toBe(true));
    await new Promise((r) => setTimeout(r, 20));
    const log = screen.getByRole('log');
    expect(log.querySelectorAll('article')).toHaveLength(2);
    expect(screen.queryByRole('button', { name: 'Stop' })).toBeNull();
    expect(screen.queryByRole('alert')).toBeNull();
  });

  it('keeps the older pages loaded meanwhile when the reply followed ends while reconnecting', async () => {
    const conn = sseResponse();
    let follows = 0;
    server.onFollow(() => {
      follows += 1;
      return follows === 1 ? conn.response : new Response(null, { status: 204 });
    });
    const pages = (url: URL): Response | undefined => {
      if (url.pathname !== '/api/v1/conversations/c2/messages') return undefined;
      if (url.searchParams.get('before') === 'cur1') return json({ items: olderPage, next_cursor: null });
      return json({ items: server.messages.c2 ?? [], next_cursor: 'cur1' });
    };
    vi.stubGlobal('fetch', mockFetch([pages, server.route]).fn);
    await withLogLayout(async () => {
      await renderLoaded();
      const log = screen.getByRole('log');
      await act(async () => conn.send(start('Still there?') + ev(2, 'delta', { text: 'Yes' })));
      expect(await within(log).findByText('Yes')).toBeTruthy();
      log.scrollTop = 0;
      fireEvent.scroll(log);
      expect(await within(log).findByText('Oldest answer')).toBeTruthy();
      // The reply is stored while the connection is down; the reconnection finds nothing left (204).
      server.messages.c2?.push(msg('c2', 'user', 'Still there?'), msg('c2', 'assistant', 'Yes, always.'));
      await act(async () => conn.error(new TypeError('network error')));
      expect(await within(log).findByText('Yes, always.')).toBeTruthy();
      expect(assistants(log)).toEqual(['Oldest answer', 'Earlier answer', 'Yes, always.']);
    });
  });

  it('replaces the partial reply, never appends to it, when following starts over', async () => {
    const conns = [sseResponse(), sseResponse(), sseResponse()];
    const cursors: (string | null)[] = [];
    server.onFollow((_id, last) => {
      cursors.push(last);
      return conns[cursors.length - 1]?.response ?? new Response(null, { status: 204 });
    });
    await renderLoaded();
    const log = screen.getByRole('log');
    await act(async () => conns[0]?.send(start('Again?') + ev(2, 'delta', { text: 'Once' })));
    expect(await within(log).findByText('Once')).toBeTruthy();
    await act(async () => conns[0]?.error(new TypeError('network error')));
    // A reconnection answered from the first event (say a proxy dropped Last-Event-ID): no repeats.
    await waitFor(() => expect(cursors).toHaveLength(2));
    await act(async () => conns[1]?.send(start('Again?') + ev(2, 'delta', { text: 'Once' }) + ev(3, 'delta', { text: ' upon' })));
    expect(await within(log).findByText('Once upon')).toBeTruthy();
    await act(async () => conns[1]?.error(new TypeError('network error')));
    // A start event means "from the beginning": the text shown so far is replaced.
    await waitFor(() => expect(cursors).toHaveLength(3));
    await act(async () =>
      conns[2]?.send(
        evH(1, 'start', { generation_id: H, conversation_id: 'c2', content: 'Again?' }) + evH(2, 'delta', { text: 'Once upon a time' }),
      ),
    );
    expect(await within(log).findByText('Once upon a time')).toBeTruthy();
    expect(cursors).toEqual([null, `${G}:2`, `${G}:3`]);
    expect(within(log).getAllByText('Again?')).toHaveLength(1);
    expect(assistants(log)).toEqual(['Earlier answer', 'Once upon a time']);
  });

  it('stops following when switching away, and follows from the start again on coming back', async () => {
    const streams: ReturnType<typeof sseResponse>[] = [];
    const signals: AbortSignal[] = [];
    server.onFollow((id, _last, init) => {
      if (id !== 'c2') return new Response(null, { status: 204 });
      const sse = sseResponse();
      streams.push(sse);
      if (init.signal) signals.push(init.signal);
      return sse.response;
    });
    await renderLoaded();
    await waitFor(() => expect(streams).toHaveLength(1));
    await act(async () => streams[0]?.send(start('Long task') + ev(2, 'delta', { text: 'Step one' })));
    expect(await screen.findByText('Step one')).toBeTruthy();

    fireEvent.click(screen.getByRole('button', { name: 'Older chat' }));
    await screen.findByText('No messages yet');
    expect(signals[0]?.aborted).toBe(true);
    expect(screen.queryByRole('button', { name: 'Stop' })).toBeNull();
    expect(screen.queryByText('Step one')).toBeNull();

    fireEvent.click(screen.getByRole('button', { name: 'Recent chat' }));
    await waitFor(() => expect(streams).toHaveLength(2));
    await act(async () => streams[1]?.send(start('Long task') + ev(2, 'delta', { text: 'Step one' }) + ev(3, 'delta', { text: ', step two' })));
    const log = screen.getByRole('log');
    expect(await within(log).findByText('Step one, step two')).toBeTruthy();
    expect(within(log).getAllByText('Long task')).toHaveLength(1);
    expect(await screen.findByRole('button', { name: 'Stop' })).toBeTruthy();
  });

  it('reconnects with Last-Event-ID after a network error and carries on where it was', async () => {
    const first = sseResponse();
    const second = sseResponse();
    const cursors: (string | null)[] = [];
    server.onFollow((_id, last) => {
      cursors.push(last);
      return cursors.length === 1 ? first.response : second.response;
    });
    await renderLoaded();
    await act(async () => first.send(start('Resume me') + ev(2, 'delta', { text: 'Half' })));
    const log = screen.getByRole('log');
    expect(await within(log).findByText('Half')).toBeTruthy();
    await act(async () => first.error(new TypeError('network error')));
    await waitFor(() => expect(cursors).toHaveLength(2));
    expect(cursors).toEqual([null, `${G}:2`]);
    await act(async () => second.send(ev(3, 'delta', { text: ' and whole' })));
    expect(await within(log).findByText('Half and whole')).toBeTruthy();
    const done = { user_message: msg('c2', 'user', 'Resume me'), assistant_message: msg('c2', 'assistant', 'Half and whole') };
    await act(async () => {
      second.send(ev(4, 'done', done));
      second.close();
    });
    await waitFor(() => expect(screen.queryByRole('button', { name: 'Stop' })).toBeNull());
    expect(assistants(log)).toEqual(['Earlier answer', 'Half and whole']);
    expect(screen.queryByRole('alert')).toBeNull();
  });

  /**
   * Renders with streamed sends answered by `post`; once the first load's follow is done, later
   * follows answer with `answer()`. Returns the `Last-Event-ID` of each later follow.
   */
  async function renderWithFollow(post: ReturnType<typeof sseResponse>, answer: () => Response) {
    const cursors: (string | null)[] = [];
    server.onStream(() => post.response);
    await renderLoaded();
    await waitFor(() => expect(fetchMock.calls.some((c) => c.url === '/api/v1/conversations/c2/stream')).toBe(true));
    server.onFollow((_id, last) => {
      cursors.push(last);
      return answer();
    });
    return cursors;
  }

  it('a dropped send resumes with Last-Event-ID instead of giving the message back', async () => {
    const post = sseResponse();
    const resumed = sseResponse();
    const cursors = await renderWithFollow(post, () => resumed.response);
    fireEvent.change(composer(), { target: { value: 'Keep going' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await act(async () => post.send(start('Keep going') + ev(2, 'delta', { text: 'Going' })));
    const log = screen.getByRole('log');
    expect(await within(log).findByText('Going')).toBeTruthy();
    await act(async () => post.error(new TypeError('network error')));
    await waitFor(() => expect(cursors).toEqual([`${G}:2`]));
    const done = { user_message: msg('c2', 'user', 'Keep going'), assistant_message: msg('c2', 'assistant', 'Going on') };
    await act(async () => {
      resumed.send(ev(3, 'delta', { text: ' on' }) + ev(4, 'done', done));
      resumed.close();
    });
    await waitFor(() => expect(screen.queryByRole('button', { name: 'Stop' })).toBeNull());
    expect(assistants(log)).toEqual(['Earlier answer', 'Going on']);
    expect((composer() as HTMLTextAreaElement).value).toBe('');
    expect(screen.queryByRole('alert')).toBeNull();
  });

  it('says the connection to a streaming reply was lost while it reconnects, and stops saying so once it is back', async () => {
    const post = sseResponse();
    const resumed = sseResponse();
    let resumes = 0;
    await renderWithFollow(post, () => {
      resumes += 1;
      return resumed.response;
    });
    fireEvent.change(composer(), { target: { value: 'Keep going' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await act(async () => post.send(start('Keep going') + ev(2, 'delta', { text: 'Going' })));
    expect(screen.queryByText('Connection lost. Reconnecting…')).toBeNull();
    await act(async () => post.error(new TypeError('network error')));
    await waitFor(() => expect(resumes).toBe(1));
    expect(screen.getByText('Connection lost. Reconnecting…')).toBeTruthy();
    expect(screen.getByRole('button', { name: 'Stop' })).toBeTruthy();
    await act(async () => resumed.send(ev(3, 'delta', { text: ' on' })));
    await waitFor(() => expect(screen.queryByText('Connection lost. Reconnecting…')).toBeNull());
    expect(await within(screen.getByRole('log')).findByText('Going on')).toBeTruthy();
  });

  it('Stop while following, when the server cannot be asked to stop the reply, stops reading and picks up the stored reply later', async () => {
    const sse = sseResponse();
    let signal: AbortSignal | undefined;
    server.onFollow((_id, _last, init) => {
      signal = init.signal ?? undefined;
      return sse.response;
    });
    await renderLoaded();
    await act(async () => sse.send(start('Stop me') + ev(2, 'delta', { text: 'Partial' })));
    expect(await screen.findByText('Partial')).toBeTruthy();
    server.messages.c2?.push(msg('c2', 'user', 'Stop me'), msg('c2', 'assistant', 'Partial, then complete.'));
    fireEvent.click(screen.getByRole('button', { name: 'Stop' }));
    // The fake server has no stop route (404): reading stops instead.
    await waitFor(() => expect(signal?.aborted).toBe(true));
    expect(await screen.findByText(/Stopped/)).toBeTruthy();
    expect(await within(screen.getByRole('log')).findByText('Partial, then complete.', {}, { timeout: 4000 })).toBeTruthy();
    expect(screen.queryByText(/Stopped/)).toBeNull();
    expect(within(screen.getByRole('log')).getAllByText('Stop me')).toHaveLength(1);
  });

  /** Answers stop requests with `status`, and counts them by path. */
  function stopRoute(status: number, body: unknown) {
    const stops: string[] = [];
    const route: Route = (url, init) => {
      if (init.method !== 'POST' || !url.pathname.endsWith('/stop')) return undefined;
      stops.push(url.pathname);
      return json(body, status);
    };
    vi.stubGlobal('fetch', mockFetch([route, server.route]).fn);
    return stops;
  }

  it('Stop asks the server to stop the reply; its stream then ends with what was stored, and Send comes back after', async () => {
    const stops = stopRoute(200, { status: 'stopped' });
    const sse = sseResponse();
    let signal: AbortSignal | undefined;
    let chosen: string | undefined;
    server.onStream((_id, _content, init) => {
      signal = init.signal ?? undefined;
      chosen = (JSON.parse(String(init.body)) as { generation_id?: string }).generation_id;
      return sse.response;
    });
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Tell me everything' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await act(async () => sse.send(start('Tell me everything') + ev(2, 'delta', { text: 'The first part' })));
    expect(await screen.findByText('The first part')).toBeTruthy();
    fireEvent.click(screen.getByRole('button', { name: 'Stop' }));
    // The id the reply's events carry (a server that chose it itself), not the one the send chose.
    expect(chosen).not.toBe(G);
    await waitFor(() => expect(stops).toEqual([`/api/v1/conversations/c2/generations/${G}/stop`]));
    // Until the stored reply arrives, nothing else can be sent: it comes before the next message.
    expect(screen.getByRole('button', { name: 'Stop' })).toBeTruthy();
    expect(signal?.aborted).toBe(false);
    const done = { user_message: msg('c2', 'user', 'Tell me everything'), assistant_message: msg('c2', 'assistant', 'The first part') };
    await act(async () => {
      sse.send(ev(3, 'done', done));
      sse.close();
    });
    expect(await screen.findByRole('button', { name: 'Send' })).toBeTruthy();
    const log = screen.getByRole('log');
    expect(within(log).getAllByText('The first part')).toHaveLength(1);
    expect(screen.queryByText(/Stopped/)).toBeNull();
    expect(cutShortNote()).toBeUndefined();
  });

  it('a reply stopped before its first words gives the message back and says so, not that the assistant failed', async () => {
    stopRoute(200, { status: 'stopped' });
    const sse = sseResponse();
    server.onStream(() => sse.response);
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Never mind' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await act(async () => sse.send(start('Never mind')));
    fireEvent.click(await screen.findByRole('button', { name: 'Stop' }));
    await act(async () => {
      sse.send(ev(2, 'error', { message: 'The reply was stopped before it began; nothing was stored.', code: 'stopped' }));
      sse.close();
    });
    const alert = await screen.findByRole('alert');
    expect(alert.textContent).toBe('Stopped before the reply began. Nothing was stored. Your message is back in the message box.');
    expect((composer() as HTMLTextAreaElement).value).toBe('Never mind');
  });

  it('a reply the server says it stopped, whose stream then brings nothing, is read no more after a few seconds', () =>
    inFakeTime(async () => {
      stopRoute(200, { status: 'stopped' });
      const sse = sseResponse();
      let signal: AbortSignal | undefined;
      server.onStream((_id, _content, init) => {
        signal = init.signal ?? undefined;
        return sse.response;
      });
      await renderLoaded();
      fireEvent.change(composer(), { target: { value: 'Into the void' } });
      fireEvent.keyDown(composer(), { key: 'Enter' });
      await act(async () => sse.send(start('Into the void') + ev(2, 'delta', { text: 'Half' })));
      fireEvent.click(await screen.findByRole('button', { name: 'Stop' }));
      await passTime(1000);
      expect(signal?.aborted).toBe(false);
      server.messages.c2?.push(msg('c2', 'user', 'Into the void'), msg('c2', 'assistant', 'Half'));
      await passTime(2500);
      expect(signal?.aborted).toBe(true);
      await passTime(3000);
      expect(within(screen.getByRole('log')).getAllByText('Into the void')).toHaveLength(1);
      expect(screen.getByRole('button', { name: 'Send' })).toBeTruthy();
    }));

  it('Stop of a followed reply asks the server to stop it too', async () => {
    const stops = stopRoute(200, { status: 'stopped' });
    const sse = sseResponse();
    server.onFollow(() => sse.response);
    await renderLoaded();
    await act(async () => sse.send(start('Sent in another tab') + ev(2, 'delta', { text: 'Going on' })));
    expect(await screen.findByText('Going on')).toBeTruthy();
    fireEvent.click(screen.getByRole('button', { name: 'Stop' }));
    await waitFor(() => expect(stops).toEqual([`/api/v1/conversations/c2/generations/${G}/stop`]));
    const done = { user_message: msg('c2', 'user', 'Sent in another tab'), assistant_message: msg('c2', 'assistant', 'Going on') };
    await act(async () => {
      sse.send(ev(3, 'done', done));
      sse.close();
    });
    expect(await screen.findByRole('button', { name: 'Send' })).toBeTruthy();
    expect(screen.queryByText(/Stopped/)).toBeNull();
  });

  it('Stop that the server could not carry out in time stops reading, as without it', async () => {
    const stops = stopRoute(202, { status: 'stopping' });
    const sse = sseResponse();
    server.onStream(() => sse.response);
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Slow to store' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await act(async () => sse.send(start('Slow to store') + ev(2, 'delta', { text: 'Partly' })));
    expect(await screen.findByText('Partly')).toBeTruthy();
    server.messages.c2?.push(msg('c2', 'user', 'Slow to store'), msg('c2', 'assistant', 'Partly'));
    fireEvent.click(screen.getByRole('button', { name: 'Stop' }));
    expect(await screen.findByText(/Stopped/)).toBeTruthy();
    expect(stops).toHaveLength(1);
    expect(await within(screen.getByRole('log')).findByText('Partly', { selector: '.message-body *, .message-body' }, { timeout: 4000 })).toBeTruthy();
  });

  /** Sends `text` on a streamed POST that starts and shows `partial`, then presses Stop. */
  async function sendThenStop(post: ReturnType<typeof sseResponse>, text: string, partial: string) {
    fireEvent.change(composer(), { target: { value: text } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await act(async () => post.send(start(text) + ev(2, 'delta', { text: partial })));
    expect(await screen.findByText(partial)).toBeTruthy();
    fireEvent.click(screen.getByRole('button', { name: 'Stop' }));
    expect(await screen.findByText(/Stopped/)).toBeTruthy();
  }

  it('after Stop, a reply longer than the polls is followed silently to its end and then shown', () =>
    inFakeTime(async () => {
      const post = sseResponse();
      const rest = sseResponse();
      const cursors = await renderWithFollow(post, () => rest.response);
      await sendThenStop(post, 'A long one', 'Slowly');
      await passTime(10_000);
      expect(cursors).toEqual([`${G}:2`]);
      expect(screen.getByText(/Stopped/)).toBeTruthy();
      const done = { user_message: msg('c2', 'user', 'A long one'), assistant_message: msg('c2', 'assistant', 'Slowly, at last.') };
      server.messages.c2?.push(done.user_message, done.assistant_message);
      await act(async () => {
        rest.send(ev(3, 'done', done));
        rest.close();
      });
      expect(await within(screen.getByRole('log')).findByText('Slowly, at last.')).toBeTruthy();
      expect(screen.getByTestId('reply-announcer').textContent).toBe('Assistant: Slowly, at last.');
      expect(screen.queryByText(/Stopped/)).toBeNull();
      expect(screen.queryByRole('alert')).toBeNull();
      expect((composer() as HTMLTextAreaElement).value).toBe('');
    }));

  it('after Stop, a stream out of reach for good is reported while waiting and does not keep the stored reply from showing', () =>
    inFakeTime(async () => {
      const post = sseResponse();
      const follows = await renderWithFollow(post, () =>
        json({ status: 'error', message: 'Replies in progress cannot be resumed right now.', code: 'stream_log_unavailable' }, 503),
      );
      await sendThenStop(post, 'Out of reach', 'Partly');
      await passTime(20_000);
      expect(follows.length).toBeGreaterThan(0);
      expect(screen.getByText(/Stopped/)).toBeTruthy();
      const alert = await screen.findByRole('alert');
      expect(alert.textContent).toContain('Lost the way to the reply for now');
      expect(alert.textContent).toContain('Trying again');
      expect((composer() as HTMLTextAreaElement).value).toBe('');
      const done = { user_message: msg('c2', 'user', 'Out of reach'), assistant_message: msg('c2', 'assistant', 'Stored all the same.') };
      server.messages.c2?.push(done.user_message, done.assistant_message);
      await passTime(20_000);
      expect(await within(screen.getByRole('log')).findByText('Stored all the same.')).toBeTruthy();
      expect(screen.queryByText(/Stopped/)).toBeNull();
      expect(screen.queryByRole('alert')).toBeNull();
    }));

  /** Follows a reply to `text` on opening the app, and has the assistant fail it. */
  async function followAFailingReply(text: string) {
    const sse = sseResponse();
    server.onFollow((id) => (id === 'c2' ? sse.response : new Response(null, { status: 204 })));
    await renderLoaded();
    await act(async () => sse.send(start(text) + ev(2, 'delta', { text: 'Once' })));
    expect(await screen.findByText('Once')).toBeTruthy();
    await act(async () => {
      sse.send('event: error\ndata: {"message":"The assistant failed.","code":"assistant_failed"}\n\n');
      sse.close();
    });
    expect((await screen.findByRole('alert')).textContent).toContain('Nothing was stored');
    expect(screen.queryByText('Once')).toBeNull();
  }

  it('a followed reply the assistant fails gives the message back to the tab that sent it, reloaded', async () => {
    markSent('c2', 'Tell me a story');
    await followAFailingReply('Tell me a story');
    expect((composer() as HTMLTextAreaElement).value).toBe('Tell me a story');
    expect(sentHere('c2', 'Tell me a story')).toBe(false);
  });

  it('a followed reply whose conversation was deleted says so, and the message goes back to the tab that sent it', async () => {
    markSent('c2', 'Deleted under me');
    const sse = sseResponse();
    server.onFollow((id) => (id === 'c2' ? sse.response : new Response(null, { status: 204 })));
    await renderLoaded();
    await act(async () => sse.send(start('Deleted under me') + ev(2, 'delta', { text: 'Half' })));
    expect(await screen.findByText('Half')).toBeTruthy();
    await act(async () => {
      sse.send('event: error\ndata: {"message":"Conversation not found.","code":"conversation_not_found"}\n\n');
      sse.close();
    });
    expect((await screen.findByRole('alert')).textContent).toContain('This conversation was deleted');
    expect((composer() as HTMLTextAreaElement).value).toBe('Deleted under me');
    expect(screen.queryByText('Half')).toBeNull();
    // Gone from the list, as a deletion seen any other way.
    expect(within(screen.getByRole('navigation', { name: 'Conversations' })).queryByRole('button', { name: 'Recent chat' })).toBeNull();
  });

  it('a message sent again with an earlier one\'s text is given back when its own reply was not stored', async () => {
    const answered = server.messages.c2?.at(-1)?.id ?? null;
    markSent('c2', 'Earlier question', answered);
    markTaken('c2', 'Earlier question');
    await renderLoaded();
    await waitFor(() => expect((composer() as HTMLTextAreaElement).value).toBe('Earlier question'));
    expect(screen.getByRole('alert').textContent).toContain('was not stored');
  });

  it('a send cut by leaving the page is neither given back nor forgotten: the next page looks for it', async () => {
    let cut!: (error: Error) => void;
    server.onStream(() => new Promise<Response>((_resolve, reject) => (cut = reject)));
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Cut by a reload' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await waitFor(() => expect(cut).toBeDefined());
    window.dispatchEvent(new Event('pagehide'));
    try {
      // As Chromium does: the request fails like a lost connection, while the page goes.
      await act(async () => cut(new TypeError('Failed to fetch')));
      expect(sentHere('c2', 'Cut by a reload')).toBe(true);
      expect(loadDraft('c2')).toBe('');
      expect(screen.queryByRole('alert')).toBeNull();
    } finally {
      window.dispatchEvent(new Event('pageshow'));
    }
  });

  it('a message whose request a reload cut, taken by the server late, is shown and not given back', () =>
    inFakeTime(async () => {
      markSent('c2', 'Late but taken', server.messages.c2?.at(-1)?.id ?? null);
      await renderLoaded();
      await passTime(1_000);
      expect((composer() as HTMLTextAreaElement).value).toBe('');
      server.messages.c2?.push(msg('c2', 'user', 'Late but taken'), msg('c2', 'assistant', 'Taken late.'));
      await passTime(3_000);
      expect(await within(screen.getByRole('log')).findByText('Taken late.')).toBeTruthy();
      expect((composer() as HTMLTextAreaElement).value).toBe('');
      expect(sentHere('c2', 'Late but taken')).toBe(false);
      expect(screen.queryByRole('alert')).toBeNull();
    }));

  it('a message whose request a reload cut, never taken, comes back once it can no longer arrive', () =>
    inFakeTime(async () => {
      markSent('c2', 'Never arrived', server.messages.c2?.at(-1)?.id ?? null);
      await renderLoaded();
      await passTime(5_000);
      expect((composer() as HTMLTextAreaElement).value).toBe('');
      await passTime(8_000);
      await waitFor(() => expect((composer() as HTMLTextAreaElement).value).toBe('Never arrived'));
      expect(screen.getByRole('alert').textContent).toContain('did not reach the server');
    }));

  /**
   * Opens c2 on a reply of `text` in progress, shows `partial` of it, then loses the connection;
   * the reconnection finds nothing more (204): the reply ended unstored meanwhile.
   */
  async function followAReplyThatEndsUnseen(text: string, partial: string) {
    const sse = sseResponse();
    let asked = 0;
    server.onFollow(() => {
      asked += 1;
      return asked === 1 ? sse.response : new Response(null, { status: 204 });
    });
    await renderLoaded();
    await act(async () => sse.send(start(text) + ev(2, 'delta', { text: partial })));
    expect(await screen.findByText(partial)).toBeTruthy();
    await act(async () => sse.error(new TypeError('network error')));
  }

  it('a followed reply that ended unstored while reconnecting gives the message back to the tab that sent it', async () => {
    markSent('c2', 'Cut off', server.messages.c2?.at(-1)?.id ?? null);
    markTaken('c2', 'Cut off');
    await followAReplyThatEndsUnseen('Cut off', 'Half');
    await waitFor(() => expect((composer() as HTMLTextAreaElement).value).toBe('Cut off'));
    expect(screen.getByRole('alert').textContent).toContain('was not stored');
    expect(screen.queryByText('Half')).toBeNull();
  });

  it('messages sent here whose replies were all lost come back together, in the order sent', async () => {
    const shown = server.messages.c2?.at(-1)?.id ?? null;
    for (const text of ['alpha', 'beta']) {
      markSent('c2', text, shown);
      markTaken('c2', text);
    }
    await renderLoaded();
    await waitFor(() => expect((composer() as HTMLTextAreaElement).value).toBe('alpha\nbeta'));
    expect(screen.getByRole('alert').textContent).toContain('2 of your messages');
    expect(sentHere('c2', 'alpha') || sentHere('c2', 'beta')).toBe(false);
  });

  /** An older reply of c2 than G's, still running while G's is followed. */
  const olderStart = evH(1, 'start', { generation_id: H, conversation_id: 'c2', content: 'alpha' });

  /** Opens c2 following a newer reply first, then the older one still running, then nothing (204). */
  async function followingTwoReplies() {
    const newer = sseResponse();
    const older = sseResponse();
    const answers = [newer, older];
    server.onFollow(() => answers.shift()?.response ?? new Response(null, { status: 204 }));
    await renderLoaded();
    return { newer, older };
  }

  it('after a followed reply ends, an older one still running is followed too', async () => {
    const { newer, older } = await followingTwoReplies();
    const beta = { user_message: msg('c2', 'user', 'beta'), assistant_message: msg('c2', 'assistant', 'Beta answered.') };
    await act(async () => {
      newer.send(start('beta') + ev(2, 'done', beta));
      newer.close();
    });
    const log = screen.getByRole('log');
    expect(await within(log).findByText('Beta answered.')).toBeTruthy();
    await act(async () => older.send(olderStart + evH(2, 'delta', { text: 'Alpha so far' })));
    expect(await within(log).findByText('Alpha so far')).toBeTruthy();
    const alpha = { user_message: msg('c2', 'user', 'alpha'), assistant_message: msg('c2', 'assistant', 'Alpha answered.') };
    await act(async () => {
      older.send(evH(3, 'done', alpha));
      older.close();
    });
    expect(await within(log).findByText('Alpha answered.')).toBeTruthy();
    expect(within(log).getByText('Beta answered.')).toBeTruthy();
  });

  it('after a followed reply fails, an older one still running is followed too', async () => {
    const { newer: failing, older } = await followingTwoReplies();
    await act(async () => {
      failing.send(start('beta') + 'event: error\ndata: {"message":"The assistant failed.","code":"assistant_failed"}\n\n');
      failing.close();
    });
    expect((await screen.findByRole('alert')).textContent).toContain('Nothing was stored');
    const alpha = { user_message: msg('c2', 'user', 'alpha'), assistant_message: msg('c2', 'assistant', 'Alpha answered.') };
    await act(async () => {
      older.send(olderStart + evH(2, 'done', alpha));
      older.close();
    });
    expect(await within(screen.getByRole('log')).findByText('Alpha answered.')).toBeTruthy();
  });

  it('a watched reply that ended unstored while reconnecting is reported in a tab that did not send it', async () => {
    await followAReplyThatEndsUnseen('Sent elsewhere', 'Partly');
    expect((await screen.findByRole('alert')).textContent).toContain('lost before it was stored');
    expect(screen.queryByText('Partly')).toBeNull();
    expect((composer() as HTMLTextAreaElement).value).toBe('');
  });

  it('a followed reply the assistant fails is only reported in a tab that did not send it', async () => {
    await followAFailingReply('Sent from another tab');
    expect((composer() as HTMLTextAreaElement).value).toBe('');
    expect(screen.getByRole('alert').textContent).not.toContain('back in the message box');
  });

  it('a followed reply out of reach for good is waited for and shown once stored, the alert gone', () =>
    inFakeTime(async () => {
      const sse = sseResponse();
      let follows = 0;
      server.onFollow((id) => {
        if (id !== 'c2') return new Response(null, { status: 204 });
        follows += 1;
        if (follows === 1) return sse.response;
        throw new TypeError('network error');
      });
      await renderLoaded();
      await act(async () => sse.send(start('Still there?') + ev(2, 'delta', { text: 'Yes' })));
      expect(await screen.findByText('Yes')).toBeTruthy();
      await act(async () => sse.error(new TypeError('network error')));
      expect((await screen.findByRole('alert')).textContent).toContain('Lost the reply in progress');
      expect(cutShortNote()).toBe('Connection lost. Waiting for the server to store the reply; if it restarted, the reply is lost.');
      const done = { user_message: msg('c2', 'user', 'Still there?'), assistant_message: msg('c2', 'assistant', 'Yes, always.') };
      server.messages.c2?.push(done.user_message, done.assistant_message);
      await passTime(3_000);
      expect(await within(screen.getByRole('log')).findByText('Yes, always.')).toBeTruthy();
      expect(cutShortNote()).toBeUndefined();
      expect(screen.queryByRole('alert')).toBeNull();
      expect((composer() as HTMLTextAreaElement).value).toBe('');
    }));

  it('after Stop, a refusal of the moment (429, 503) is tried again, not taken for a lost reply', () =>
    inFakeTime(async () => {
      const post = sseResponse();
      await renderWithFollow(post, () => new Response(null, { status: 204 }));
      await sendThenStop(post, 'Busy now', 'Part');
      let refusals = 0;
      vi.stubGlobal(
        'fetch',
        mockFetch([
          (url, init) => {
            if (init.method !== undefined && init.method !== 'GET') return undefined;
            if (!url.pathname.endsWith('/c2/messages') || refusals >= 12) return undefined;
            refusals += 1;
            return json({ status: 'error', message: 'Too many requests.', code: 'rate_limited' }, 429, { 'Retry-After': '1' });
          },
          server.route,
        ]).fn,
      );
      await passTime(15_000);
      // Past the 8 polls after which a refusal used to count as the reply being lost.
      expect(refusals).toBeGreaterThan(8);
      expect((composer() as HTMLTextAreaElement).value).toBe('');
      const done = { user_message: msg('c2', 'user', 'Busy now'), assistant_message: msg('c2', 'assistant', 'Part of it, then all.') };
      server.messages.c2?.push(done.user_message, done.assistant_message);
      await passTime(20_000);
      expect(await within(screen.getByRole('log')).findByText('Part of it, then all.')).toBeTruthy();
      expect((composer() as HTMLTextAreaElement).value).toBe('');
    }));

  it('a resume answered by a page instead of a stream is waited for, not taken for a failed reply', () =>
    inFakeTime(async () => {
      const post = sseResponse();
      await renderWithFollow(post, () => new Response('<!doctype html><p>Hello from a proxy</p>', { status: 200, headers: { 'Content-Type': 'text/html' } }));
      fireEvent.change(composer(), { target: { value: 'Through a proxy' } });
      fireEvent.keyDown(composer(), { key: 'Enter' });
      await act(async () => post.send(start('Through a proxy') + ev(2, 'delta', { text: 'Part' })));
      expect(await screen.findByText('Part')).toBeTruthy();
      await act(async () => post.error(new TypeError('network error')));
      expect((await screen.findByRole('alert')).textContent).toContain('Lost the connection');
      expect(cutShortNote()).toBe('Connection lost. Waiting for the server to store the reply; if it restarted, the reply is lost.');
      expect((composer() as HTMLTextAreaElement).value).toBe('');
      const done = { user_message: msg('c2', 'user', 'Through a proxy'), assistant_message: msg('c2', 'assistant', 'Part, and the rest.') };
      server.messages.c2?.push(done.user_message, done.assistant_message);
      await passTime(3_000);
      expect(await within(screen.getByRole('log')).findByText('Part, and the rest.')).toBeTruthy();
      expect(cutShortNote()).toBeUndefined();
      expect((composer() as HTMLTextAreaElement).value).toBe('');
      expect(screen.queryByRole('alert')).toBeNull();
    }));

  it('the stopped reply showing up keeps the alert about a later send', () =>
    inFakeTime(async () => {
      const post = sseResponse();
      await renderWithFollow(post, () => new Response(null, { status: 204 }));
      await sendThenStop(post, 'First', 'Fir');
      server.onStream(() => json({ status: 'error', message: 'Too many requests.', code: 'rate_limited' }, 429, { 'Retry-After': '2' }));
      fireEvent.change(composer(), { target: { value: 'Second' } });
      fireEvent.keyDown(composer(), { key: 'Enter' });
      expect((await screen.findByRole('alert')).textContent).toContain('Sending failed');
      const done = { user_message: msg('c2', 'user', 'First'), assistant_message: msg('c2', 'assistant', 'First, answered.') };
      server.messages.c2?.push(done.user_message, done.assistant_message);
      await passTime(3_000);
      expect(await within(screen.getByRole('log')).findByText('First, answered.')).toBeTruthy();
      expect(screen.getByRole('alert').textContent).toContain('Sending failed');
      expect((composer() as HTMLTextAreaElement).value).toBe('Second');
    }));

  it('a send after the messages failed to load is not taken for the first, and brings the history', async () => {
    const untitled = server.conversations.find((c) => c.id === 'c2');
    if (untitled) untitled.title = 'New chat';
    vi.stubGlobal('fetch', failingFirstPageOfRecentChat().fn);
    const done = sseResponse();
    server.onStream(() => done.response);
    render(<App />);
    expect(await screen.findByText(/Could not load the messages/)).toBeTruthy();
    fireEvent.change(composer(), { target: { value: 'A follow-up question' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await screen.findByRole('button', { name: 'Stop' });
    await storeAndFinish(done, 'A follow-up question', 'Follow-up answer');
    const log = screen.getByRole('log');
    await within(log).findByText('Earlier answer');
    expect(within(log).getByText('Follow-up answer')).toBeTruthy();
    expect(screen.queryByText(/Could not load the messages/)).toBeNull();
    // Named after its real first message, once that is known.
    await waitFor(() => expect(server.conversations.find((c) => c.id === 'c2')?.title).toBe('Earlier question'));
  });

  it('a send while the messages are still loading is not taken for the first either', async () => {
    const untitled = server.conversations.find((c) => c.id === 'c2');
    if (untitled) untitled.title = 'New chat';
    let releasePage: () => void = () => undefined;
    let held = true;
    vi.stubGlobal(
      'fetch',
      mockFetch([
        (url, init) => {
          if (init.method !== 'GET' || url.pathname !== '/api/v1/conversations/c2/messages' || !held) return undefined;
          held = false;
          return new Promise<Response | undefined>((resolve) => (releasePage = () => resolve(undefined)));
        },
        server.route,
      ]).fn,
    );
    const done = sseResponse();
    server.onStream(() => done.response);
    render(<App />);
    expect(await screen.findByText('Loading messages…')).toBeTruthy();
    fireEvent.change(composer(), { target: { value: 'Sent before the page came' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await screen.findByRole('button', { name: 'Stop' });
    await storeAndFinish(done, 'Sent before the page came', 'Answered');
    await within(screen.getByRole('log')).findByText('Earlier answer');
    releasePage();
    await waitFor(() => expect(server.conversations.find((c) => c.id === 'c2')?.title).toBe('Earlier question'));
  });

  it('a reply stopped while the messages could not be loaded brings them once it is stored', () =>
    inFakeTime(async () => {
      const post = sseResponse();
      server.onStream(() => post.response);
      server.onFollow(() => new Response(null, { status: 204 }));
      vi.stubGlobal('fetch', failingFirstPageOfRecentChat().fn);
      render(<App />);
      expect(await screen.findByText(/Could not load the messages/)).toBeTruthy();
      await sendThenStop(post, 'While it failed', 'Wh');
      server.messages.c2?.push(msg('c2', 'user', 'While it failed'), msg('c2', 'assistant', 'Stored after all.'));
      await passTime(5_000);
      const log = screen.getByRole('log');
      expect(await within(log).findByText('Stored after all.')).toBeTruthy();
      expect(within(log).getByText('Earlier answer')).toBeTruthy();
      expect(screen.queryByText(/Could not load the messages/)).toBeNull();
    }));

  it('Retry while a stopped reply is waited for does not follow it a second way', async () => {
    const post = sseResponse();
    server.onStream(() => post.response);
    server.onFollow(() => new Response(null, { status: 204 }));
    const fetch = failingFirstPageOfRecentChat();
    vi.stubGlobal('fetch', fetch.fn);
    render(<App />);
    expect(await screen.findByText(/Could not load the messages/)).toBeTruthy();
    await sendThenStop(post, 'While it failed', 'Wh');
    const follows = () => fetch.calls.filter((c) => c.url === '/api/v1/conversations/c2/stream').length;
    const before = follows();
    fireEvent.click(screen.getByRole('button', { name: 'Retry' }));
    await within(screen.getByRole('log')).findByText('Earlier answer');
    await new Promise((r) => setTimeout(r, 50));
    expect(follows()).toBe(before);
  });

  /** Stores the exchange of `text` and `reply` in c2, as the server does, and ends `stream` with its `done`. */
  const storeAndFinish = (stream: ReturnType<typeof sseResponse>, text: string, reply: string) => storeAndFinishIn('c2', stream, text, reply);

  /**
   * Sends "The first question" and stops its reply, which the server then loses (204, nothing
   * stored), then sends `secondText`; returns the stream that answers it.
   */
  async function stopThenSendAgain(secondText: string) {
    const first = sseResponse();
    const second = sseResponse();
    const posts = [first, second];
    server.onStream(() => (posts.shift() ?? second).response);
    await renderLoaded();
    await waitFor(() => expect(fetchMock.calls.some((c) => c.url === '/api/v1/conversations/c2/stream')).toBe(true));
    server.onFollow(() => new Response(null, { status: 204 }));
    await sendThenStop(first, 'The first question', 'Thinking about it');
    fireEvent.change(composer(), { target: { value: secondText } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    return second;
  }

  it('a stopped reply stays in view above a message sent after it, until it shows stored', () =>
    inFakeTime(async () => {
      const second = await stopThenSendAgain('Sent after Stop');
      await act(async () => second.send('event: delta\ndata: {"text":"Streaming now"}\n\n'));
      const log = screen.getByRole('log');
      expect(await within(log).findByText('Streaming now')).toBeTruthy();
      const texts = () => [...log.querySelectorAll('article')].map((a) => a.querySelector('.message-body')?.textContent);
      expect(texts().slice(-4)).toEqual([
        'The first question',
        'Thinking about itStopped. The full reply will appear once the server has stored it.',
        'Sent after Stop',
        'Streaming now',
      ]);
      server.messages.c2?.push(msg('c2', 'user', 'The first question'), msg('c2', 'assistant', 'Thought it through.'));
      await passTime(2_000);
      expect(await within(log).findByText('Thought it through.')).toBeTruthy();
      expect(screen.queryByText(/Stopped\./)).toBeNull();
      expect(within(log).getAllByText('The first question')).toHaveLength(1);
      expect(within(log).getByText('Streaming now')).toBeTruthy();
    }));

  it('a stopped reply is not taken for the stored reply of the same text sent again and answered', () =>
    inFakeTime(async () => {
      const second = await stopThenSendAgain('The first question');
      await storeAndFinish(second, 'The first question', 'Answered at once.');
      const log = screen.getByRole('log');
      expect(await within(log).findByText('Answered at once.')).toBeTruthy();
      await passTime(2_000);
      expect(screen.getAllByText(/Stopped\./)).toHaveLength(1);
      server.messages.c2?.push(msg('c2', 'user', 'The first question'), msg('c2', 'assistant', 'Answered at length.'));
      await passTime(2_000);
      expect(await within(log).findByText('Answered at length.')).toBeTruthy();
      expect(screen.queryByText(/Stopped\./)).toBeNull();
    }));

  it('the same text sent twice and stopped twice shows each exchange once it is stored', () =>
    inFakeTime(async () => {
      const second = await stopThenSendAgain('The first question');
      await act(async () => second.send(start('The first question') + ev(2, 'delta', { text: 'Again' })));
      fireEvent.click(screen.getByRole('button', { name: 'Stop' }));
      await waitFor(() => expect(screen.getAllByText(/Stopped\./)).toHaveLength(2));
      server.messages.c2?.push(msg('c2', 'user', 'The first question'), msg('c2', 'assistant', 'First answer.'));
      await passTime(2_000);
      const log = screen.getByRole('log');
      expect(await within(log).findByText('First answer.')).toBeTruthy();
      expect(screen.getAllByText(/Stopped\./)).toHaveLength(1);
      server.messages.c2?.push(msg('c2', 'user', 'The first question'), msg('c2', 'assistant', 'Second answer.'));
      await passTime(2_000);
      expect(await within(log).findByText('Second answer.')).toBeTruthy();
      expect(screen.queryByText(/Stopped\./)).toBeNull();
      expect(within(log).getAllByText('The first question')).toHaveLength(2);
    }));

  it('a message sent after Stop is not taken for the stopped reply, which is still given back when lost', () =>
    inFakeTime(async () => {
      const second = await stopThenSendAgain('A quick second one');
      await storeAndFinish(second, 'A quick second one', 'Quick answer.');
      expect(await within(screen.getByRole('log')).findByText('Quick answer.')).toBeTruthy();
      await passTime(10_000);
      const alert = await screen.findByRole('alert');
      expect(alert.textContent).toContain('The reply was lost before it was stored');
      expect((composer() as HTMLTextAreaElement).value).toBe('The first question');
    }));

  it('a stopped reply lost after a second send keeps that send\'s text for its own loss', () =>
    inFakeTime(async () => {
      const second = await stopThenSendAgain('A second one');
      await act(async () => second.send(start('A second one') + ev(2, 'delta', { text: 'Another thought' })));
      await passTime(10_000);
      expect((composer() as HTMLTextAreaElement).value).toBe('The first question');
      fireEvent.click(screen.getByRole('button', { name: 'Stop' }));
      await passTime(10_000);
      // The second reply was lost too, and this tab sent it: its text comes back as well.
      expect((composer() as HTMLTextAreaElement).value).toBe('A second one\nThe first question');
      expect(screen.getByRole('alert').textContent).toContain('Your message is back in the message box.');
    }));

  it('a reply stopped before its first event is not taken for another reply the wait then follows', () =>
    inFakeTime(async () => {
      const post = sseResponse();
      const other = sseResponse();
      const cursors = await renderWithFollow(post, () => other.response);
      fireEvent.change(composer(), { target: { value: 'Stopped while thinking' } });
      fireEvent.keyDown(composer(), { key: 'Enter' });
      fireEvent.click(await screen.findByRole('button', { name: 'Stop' }));
      expect(await screen.findByText(/Stopped/)).toBeTruthy();
      await passTime(9_000);
      // No event id to follow by: the wait follows the reply in progress, another tab's.
      expect(cursors).toEqual([null]);
      const elsewhere = { user_message: msg('c2', 'user', 'Sent elsewhere'), assistant_message: msg('c2', 'assistant', 'Not yours.') };
      await act(async () => {
        other.send(start('Sent elsewhere') + ev(2, 'done', elsewhere));
        other.close();
      });
      const alert = await screen.findByRole('alert');
      expect(alert.textContent).toContain('The reply was lost before it was stored');
      expect((composer() as HTMLTextAreaElement).value).toBe('Stopped while thinking');
    }));

  it('Stop before the server answered does not promise a reply, and gives the text back once nothing was stored', () =>
    inFakeTime(async () => {
      server.onStream(
        (_id, _content, init) =>
          new Promise<Response>((_resolve, reject) =>
            init.signal?.addEventListener('abort', () => reject(new DOMException('Aborted', 'AbortError'))),
          ),
      );
      await renderLoaded();
      fireEvent.change(composer(), { target: { value: 'Never taken' } });
      fireEvent.keyDown(composer(), { key: 'Enter' });
      fireEvent.click(await screen.findByRole('button', { name: 'Stop' }));
      expect(await screen.findByText(/Stopped before the server answered. If it took the message, its reply will appear/)).toBeTruthy();
      expect(screen.queryByText(/The full reply will appear/)).toBeNull();
      // Looked for while the model's first words may still come.
      await passTime(30_000);
      expect(screen.queryByRole('alert')).toBeNull();
      await passTime(20_000);
      const alert = await screen.findByRole('alert');
      expect(alert.textContent).toBe('Stopped before the server answered; it stored nothing. Your message is back in the message box.');
      expect((composer() as HTMLTextAreaElement).value).toBe('Never taken');
    }));

  it('a send a proxy gave up on (504) is looked for, and its reply shows once the server stored it', () =>
    inFakeTime(async () => {
      const gatewayTimeout = () => new Response('<html><body>504 Gateway Time-out</body></html>', { status: 504, headers: { 'Content-Type': 'text/html' } });
      server.onStream((id, content) => {
        // The server took it: the model's first words come, and the exchange is stored, 20 s
        // after the proxy gave up, past the first polls.
        setTimeout(() => server.messages[id]?.push(msg(id, 'user', content), msg(id, 'assistant', 'Stored after all')), 20_000);
        return gatewayTimeout();
      });
      await renderLoaded();
      fireEvent.change(composer(), { target: { value: 'Slow to answer' } });
      fireEvent.keyDown(composer(), { key: 'Enter' });
      expect(await screen.findByText(/A proxy gave up waiting for the server's answer. If it took the message, its reply will appear/)).toBeTruthy();
      expect(screen.queryByRole('alert')).toBeNull();
      expect((composer() as HTMLTextAreaElement).value).toBe('');
      await passTime(15_000);
      expect(screen.queryByRole('alert')).toBeNull();
      expect((composer() as HTMLTextAreaElement).value).toBe('');
      await passTime(10_000);
      expect(await screen.findAllByText('Stored after all')).not.toHaveLength(0);
      expect(screen.queryByText(/A proxy gave up/)).toBeNull();
      expect(screen.queryByRole('alert')).toBeNull();
      expect((composer() as HTMLTextAreaElement).value).toBe('');

      server.onStream(() => gatewayTimeout());
      fireEvent.change(composer(), { target: { value: 'Never stored' } });
      fireEvent.keyDown(composer(), { key: 'Enter' });
      await passTime(50_000);
      const alert = await screen.findByRole('alert');
      expect(alert.textContent).toBe(
        'A proxy in front of the server gave up waiting for its answer (504). The server stored nothing. Your message is back in the message box.',
      );
      expect((composer() as HTMLTextAreaElement).value).toBe('Never stored');
    }));

  it('a reply lost before it was stored (the server restarted mid-reply) gives the message back', () =>
    inFakeTime(async () => {
      const post = sseResponse();
      // A restarted server knows nothing of the generation: 204, and nothing was stored.
      const cursors = await renderWithFollow(post, () => new Response(null, { status: 204 }));
      await sendThenStop(post, 'Remember me', 'Half of it');
      await passTime(10_000);
      const alert = await screen.findByRole('alert');
      expect(alert.textContent).toContain('The reply was lost before it was stored');
      expect(alert.textContent).toContain('Your message is back in the message box.');
      // Its own generation, then the conversation asked again for another reply running.
      expect(cursors).toEqual([`${G}:2`, null]);
      expect((composer() as HTMLTextAreaElement).value).toBe('Remember me');
      expect(screen.queryByText(/Stopped/)).toBeNull();
      expect(screen.queryByText('Half of it')).toBeNull();
    }));
});

describe('navigation', () => {
  beforeEach(() => history.replaceState(null, '', '/'));

  it('a mangled link opens the app on the newest conversation instead of a blank page', async () => {
    history.replaceState(null, '', '/#/c/%E0');
    await renderLoaded();
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    expect(within(nav).getByRole('button', { name: 'Recent chat' }).getAttribute('aria-current')).toBe('page');
  });

  it('Back returns to the conversation opened before, within the app', async () => {
    await renderLoaded();
    expect(window.location.hash).toBe('#/c/c2');
    fireEvent.click(screen.getByRole('button', { name: 'Older chat' }));
    expect(await screen.findByText('No messages yet')).toBeTruthy();
    expect(window.location.hash).toBe('#/c/c1');
    await act(async () => {
      history.back();
      await new Promise((r) => setTimeout(r, 50));
    });
    expect(await screen.findByText('Earlier answer')).toBeTruthy();
    expect(window.location.hash).toBe('#/c/c2');
  });

  it('the skip link focuses the message box and keeps the conversation open', async () => {
    await renderLoaded();
    fireEvent.click(screen.getByRole('link', { name: 'Skip to message box' }));
    expect(document.activeElement).toBe(composer());
    expect(window.location.hash).toBe('#/c/c2');
    await act(async () => new Promise((r) => setTimeout(r, 50)));
    expect(screen.getByText('Earlier answer')).toBeTruthy();
  });

  it('a conversation opened by its link but beyond the loaded page shows its title and joins the list', async () => {
    await renderOlderChatBeyondTheListsPage();
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    expect(within(nav).getByRole('button', { name: 'Older chat' }).getAttribute('aria-current')).toBe('page');
  });

  it('a message refused by the server leaves an untitled conversation, not one named after it', async () => {
    server.onStream(() => json({ status: 'error', message: 'content must be at most 10 characters, got 24', code: 'text_too_long' }, 413));
    render(<App />);
    await screen.findByText('Earlier answer');
    await openNewChat();
    fireEvent.change(composer(), { target: { value: 'This is far too long....' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    const alert = await screen.findByRole('alert');
    expect(alert.textContent).toBe('Sending failed: content must be at most 10 characters, got 24. Your message is back in the message box.');
    const created = fetchMock.calls.filter((c) => c.method === 'POST' && c.url === '/api/v1/conversations');
    // Its id only: no title.
    expect(created.map((c) => Object.keys(c.body as object))).toEqual([['id']]);
    expect((composer() as HTMLTextAreaElement).value).toBe('This is far too long....');
  });

  it('a first message names its new chat, trying again when the rename meets a restarting server', () =>
    inFakeTime(async () => {
      const done = sseResponse();
      server.onStream(() => done.response);
      const renames = refusingRenames((attempt) => attempt === 1);
      render(<App />);
      await screen.findByText('Earlier answer');
      await openNewChat();
      fireEvent.change(composer(), { target: { value: 'Plan a trip to Lisbon' } });
      fireEvent.keyDown(composer(), { key: 'Enter' });
      const id = server.conversations.at(-1)?.id ?? '';
      const exchange = { user_message: msg(id, 'user', 'Plan a trip to Lisbon'), assistant_message: msg(id, 'assistant', 'Gladly.') };
      await act(async () => {
        done.send(`event: done\ndata: ${JSON.stringify(exchange)}\n\n`);
        done.close();
      });
      await waitFor(() => expect(renames.count).toBe(1));
      await passTime(1500);
      const nav = screen.getByRole('navigation', { name: 'Conversations' });
      expect(await within(nav).findByRole('button', { name: 'Plan a trip to Lisbon' })).toBeTruthy();
      expect(renames.count).toBe(2);
    }));

  it('a new chat left during its first reply is named after it without being opened again', async () => {
    const reply = sseResponse();
    server.onStream(() => reply.response);
    render(<App />);
    await screen.findByText('Earlier answer');
    await openNewChat();
    fireEvent.change(composer(), { target: { value: 'Leave me mid-reply' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await screen.findByRole('button', { name: 'Stop' });
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    fireEvent.click(within(nav).getByRole('button', { name: 'Recent chat' }));
    await screen.findByText('Earlier answer');
    const named = await within(nav).findByRole('button', { name: 'Leave me mid-reply' });
    // The server finished the reply meanwhile and stored the exchange.
    const id = server.conversations.at(-1)?.id ?? '';
    server.messages[id] = [msg(id, 'user', 'Leave me mid-reply'), msg(id, 'assistant', 'Done without you.')];
    fireEvent.click(named);
    await screen.findByText('Done without you.');
    expect(fetchMock.calls.filter((c) => c.method === 'PATCH').map((c) => c.body)).toEqual([{ title: 'Leave me mid-reply' }]);
  });

  it('a new chat left the moment its first send created it shows its own messages when opened later', async () => {
    const reply = sseResponse();
    const nav = () => screen.getByRole('navigation', { name: 'Conversations' });
    // Left before the view has taken its new chat in: in the same task as the chat's creation.
    server.onStream(() => {
      fireEvent.click(within(nav()).getByRole('button', { name: 'Recent chat' }));
      return reply.response;
    });
    render(<App />);
    await screen.findByText('Earlier answer');
    await openNewChat();
    fireEvent.change(composer(), { target: { value: 'Left at once' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    const named = await within(nav()).findByRole('button', { name: 'Left at once' });
    await screen.findByText('Earlier answer');
    const id = server.conversations.at(-1)?.id ?? '';
    server.messages[id] = [msg(id, 'user', 'Left at once'), msg(id, 'assistant', 'Stored without you.')];
    fireEvent.click(named);
    await screen.findByText('Stored without you.');
    expect(screen.queryByText('Earlier answer')).toBeNull();
  });

  it('a chat opened the moment the list shows is a new history entry, after the one the app opened', async () => {
    const entries = history.length;
    render(<App />);
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    // Clicked before the effects of the render that listed it (and opened the newest) have run.
    await clickTheMomentItShows(nav, 'Older chat');
    await waitFor(() => expect(window.location.hash).toBe('#/c/c1'));
    expect(history.length).toBe(entries + 1);
  });

  it('the default conversation, created as "Chat", is named after the first message sent into it; another "Chat" is not', async () => {
    const seed = '00000000-0000-7000-8000-000000000000';
    server.conversations.push(conv(seed, 'Chat', '2025-12-01T00:00:00Z'), conv('c3', 'Chat', '2025-11-01T00:00:00Z'));
    let stream = sseResponse();
    server.onStream(() => stream.response);
    render(<App />);
    await screen.findByText('Earlier answer');
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    fireEvent.click(within(nav).getAllByRole('button', { name: 'Chat' })[0]);
    await screen.findByText('No messages yet');
    fireEvent.change(composer(), { target: { value: 'Hello from a new user' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    expect(await within(nav).findByRole('button', { name: 'Hello from a new user' })).toBeTruthy();
    await storeAndFinishIn(seed, stream, 'Hello from a new user', 'Hello.');

    stream = sseResponse();
    fireEvent.click(within(nav).getByRole('button', { name: 'Chat' }));
    await screen.findByText('No messages yet');
    fireEvent.change(composer(), { target: { value: 'Named Chat by hand' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await storeAndFinishIn('c3', stream, 'Named Chat by hand', 'Fine.');
    expect(fetchMock.calls.filter((c) => c.method === 'PATCH').map((c) => [c.url, c.body])).toEqual([
      [expect.stringContaining(seed), { title: 'Hello from a new user' }],
    ]);
  });

  it('the default conversation is named after a first message sent into it also when the list comes after the reply', async () => {
    const seed = '00000000-0000-7000-8000-000000000000';
    server.conversations.push(conv(seed, 'Chat', '2025-12-01T00:00:00Z'));
    const release = holdConversationList();
    const stream = sseResponse();
    server.onStream(() => stream.response);
    history.replaceState(null, '', `/#/c/${seed}`);
    render(<App />);
    await screen.findByText('No messages yet');
    fireEvent.change(composer(), { target: { value: 'Sent before the list' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await storeAndFinishIn(seed, stream, 'Sent before the list', 'Hello.');
    await act(async () => release());
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    expect(await within(nav).findByRole('button', { name: 'Sent before the list' })).toBeTruthy();
  });

  it('the default conversation with messages keeps the name "Chat" on opening: it may be its user\'s', async () => {
    const seed = '00000000-0000-7000-8000-000000000000';
    server.conversations.push(conv(seed, 'Chat', '2025-12-01T00:00:00Z'));
    server.messages[seed] = [msg(seed, 'user', 'Hello from the original app'), msg(seed, 'assistant', 'Hello.')];
    render(<App />);
    await screen.findByText('Earlier answer');
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    fireEvent.click(within(nav).getByRole('button', { name: 'Chat' }));
    await screen.findByText('Hello.');
    expect(fetchMock.calls.filter((c) => c.method === 'PATCH')).toEqual([]);
  });

  it('opening a chat named by hand renames nothing', async () => {
    server.messages.c1 = [msg('c1', 'user', 'Not a title')];
    render(<App />);
    await screen.findByText('Earlier answer');
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    fireEvent.click(within(nav).getByRole('button', { name: 'Older chat' }));
    await screen.findByText('Not a title');
    expect(fetchMock.calls.filter((c) => c.method === 'PATCH')).toEqual([]);
  });

  /** Sends `text` as the first message of a new chat, answered at once; returns the conversation list. */
  async function firstMessageOfANewChat(text: string) {
    const done = sseResponse();
    server.onStream(() => done.response);
    await renderLoaded();
    await openNewChat();
    fireEvent.change(composer(), { target: { value: text } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await finishInNewestChat(done, text);
    return within(screen.getByRole('navigation', { name: 'Conversations' }));
  }

  it('a long first message names its chat without cutting an emoji in half', async () => {
    const nav = await firstMessageOfANewChat(`${'a'.repeat(56)}😀😀 and a few more words`);
    expect(await nav.findByRole('button', { name: `${'a'.repeat(56)}😀…` })).toBeTruthy();
  });

  it('a first message of flags names its chat with whole flags, within the server\'s 200 code points', async () => {
    const nav = await firstMessageOfANewChat('🇯🇵'.repeat(40));
    expect(await nav.findByRole('button', { name: '🇯🇵'.repeat(40) })).toBeTruthy();
  });

  it('a first message of family emoji (seven code points each) names its chat with whole ones the server takes', async () => {
    const family = '👨‍👩‍👧‍👦';
    const nav = await firstMessageOfANewChat(family.repeat(40));
    const title = family.repeat(28);
    expect(Array.from(title).length).toBe(196);
    expect(await nav.findByRole('button', { name: `${title}…` })).toBeTruthy();
  });

  /**
   * In a new chat, sends `first` and stops its reply, then sends `second`; returns the stream that
   * answers `second` and the conversation list.
   */
  async function stopFirstThenSendInANewChat(first: string, second: string) {
    const stopped = sseResponse();
    const answer = sseResponse();
    const posts = [stopped, answer];
    server.onStream(() => (posts.shift() ?? answer).response);
    await renderLoaded();
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    await openNewChat();
    fireEvent.change(composer(), { target: { value: first } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await act(async () => stopped.send('event: delta\ndata: {"text":"Half"}\n\n'));
    fireEvent.click(screen.getByRole('button', { name: 'Stop' }));
    await screen.findByText(/Stopped/);
    fireEvent.change(composer(), { target: { value: second } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    return { second: answer, nav };
  }

  it('a first message taken by the server names the new chat; once its stopped reply is lost, the first stored names it', () =>
    inFakeTime(async () => {
      const { second, nav } = await stopFirstThenSendInANewChat('Lost on the way', 'Kept this one');
      // The stopped reply is never stored: its wait gives up (polls, then a 204) while the second streams.
      await passTime(10_000);
      expect(await screen.findByText(/lost before it was stored/)).toBeTruthy();
      const id = server.conversations.at(-1)?.id ?? '';
      const kept = { user_message: msg(id, 'user', 'Kept this one'), assistant_message: msg(id, 'assistant', 'Stored.') };
      server.messages[id] = [kept.user_message, kept.assistant_message];
      await act(async () => {
        second.send(`event: done\ndata: ${JSON.stringify(kept)}\n\n`);
        second.close();
      });
      await within(screen.getByRole('log')).findByText('Stored.');
      // Named when the server took it, the chat holds nothing of it: its name would show words
      // that are not in the chat.
      expect(await within(nav).findByRole('button', { name: 'Kept this one' })).toBeTruthy();
      expect(fetchMock.calls.filter((c) => c.method === 'PATCH').map((c) => c.body)).toEqual([
        { title: 'Lost on the way' },
        { title: 'Kept this one' },
      ]);
    }));

  // A first message names its chat with its words, not its markdown's symbols.
  it.each([
    ['emphasis and code', '**Urgent**: the `build` fails\n\nDetails follow.', 'Urgent: the build fails'],
    ['links and an image', 'Read [the Rust book](https://doc.rust-lang.org/book/) and ![a diagram](/d.png)', 'Read the Rust book and a diagram'],
    [
      'a badge and a link with parentheses',
      '[![CI](https://ci.example/badge.svg)](https://ci.example) and [Rust](https://en.wikipedia.org/wiki/Rust_(programming_language))',
      'CI and Rust',
    ],
    ['a task, an autolink and escaped marks', '- [ ] Check <https://example.com/x> for \\*stars\\*', 'Check https://example.com/x for *stars*'],
    ['a table, by its header cells', '| col a | col b |\n| --- | --- |\n| 1 | 2 |', 'col a, col b'],
    ['a code block, by its first line of code', '```python\nprint("hello")\n```\nWhy does this fail?', 'print("hello")'],
  ])('a first message opening with %s names its chat with its words', async (_what, text, title) => {
    const nav = await firstMessageOfANewChat(text);
    expect(await nav.findByRole('button', { name: title })).toBeTruthy();
  });

  it('a message sent after Stopping the first one of a new chat does not name it', async () => {
    const { second, nav } = await stopFirstThenSendInANewChat('Plan a trip to Lisbon', 'ok');
    const id = server.conversations.at(-1)?.id ?? '';
    const trip = [msg(id, 'user', 'Plan a trip to Lisbon'), msg(id, 'assistant', 'Day one, day two.')];
    const ok = { user_message: msg(id, 'user', 'ok'), assistant_message: msg(id, 'assistant', 'Fine.') };
    server.messages[id] = [...trip, ok.user_message, ok.assistant_message];
    await act(async () => {
      second.send(`event: done\ndata: ${JSON.stringify(ok)}\n\n`);
      second.close();
    });
    expect(await within(nav).findByRole('button', { name: 'Plan a trip to Lisbon' }, { timeout: 4000 })).toBeTruthy();
    expect(within(nav).queryByRole('button', { name: 'ok' })).toBeNull();
  });

  it('sending to a conversation deleted in another tab says so, keeps the text and drops it from the list', async () => {
    server.onStream(() => json({ status: 'error', message: 'Conversation not found.', code: 'conversation_not_found' }, 404));
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Are you still there?' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    const alert = await screen.findByRole('alert');
    expect(alert.textContent).toContain('This conversation was deleted');
    expect((composer() as HTMLTextAreaElement).value).toBe('Are you still there?');
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    await waitFor(() => expect(within(nav).queryByRole('button', { name: 'Recent chat' })).toBeNull());
    expect(within(nav).getByRole('button', { name: 'Older chat' })).toBeTruthy();
    // It was listed here: deleted, not unknown.
    expect(screen.getByRole('heading', { level: 1 }).textContent).toBe('Deleted conversation');

    // Sent again, it starts a new chat, which shows none of the deleted one's messages.
    const done = sseResponse();
    server.onStream(() => done.response);
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await waitFor(() => expect(fetchMock.calls.filter((c) => c.method === 'POST' && c.url === '/api/v1/conversations')).toHaveLength(1));
    const id = server.conversations.at(-1)?.id ?? '';
    const exchange = { user_message: msg(id, 'user', 'Are you still there?'), assistant_message: msg(id, 'assistant', 'Here.') };
    await act(async () => {
      done.send(`event: done\ndata: ${JSON.stringify(exchange)}\n\n`);
      done.close();
    });
    const log = screen.getByRole('log');
    expect(await within(log).findByText('Here.')).toBeTruthy();
    expect(within(log).queryByText('Earlier answer')).toBeNull();
    expect(await within(nav).findByRole('button', { name: 'Are you still there?' })).toBeTruthy();
    expect(screen.queryByRole('alert')).toBeNull();
  });

  it('a chat deleted while its message waits for the model keeps nothing of it, to be found by its link', async () => {
    let answer: ((response: Response) => void) | undefined;
    server.onStream(() => new Promise<Response>((resolve) => (answer = resolve)));
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Gone with its chat' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await waitFor(() => expect(answer).toBeDefined());
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    fireEvent.click(within(nav).getByRole('button', { name: 'Delete Recent chat' }));
    fireEvent.click(within(screen.getByRole('alertdialog')).getByRole('button', { name: 'Delete' }));
    await screen.findByText('No messages yet');
    // The server ends the deleted chat's replies.
    await act(async () => answer?.(json({ status: 'error', message: 'Conversation not found.', code: 'conversation_not_found' }, 404)));
    expect(loadDraft('c2')).toBe('');
    expect(sentHere('c2', 'Gone with its chat')).toBe(false);
    expect((composer() as HTMLTextAreaElement).value).toBe('');
  });

  it('choosing the conversation already open adds no history entry, nor does the app choosing the next', async () => {
    await renderLoaded();
    const entries = history.length;
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    fireEvent.click(within(nav).getByRole('button', { name: 'Recent chat' }));
    await act(async () => new Promise((r) => setTimeout(r, 50)));
    expect(history.length).toBe(entries);
    // Deleting the open conversation makes the app open the next one: that replaces the entry.
    fireEvent.click(within(nav).getByRole('button', { name: 'Delete Recent chat' }));
    fireEvent.click(within(screen.getByRole('alertdialog')).getByRole('button', { name: 'Delete' }));
    await screen.findByText('No messages yet');
    expect(window.location.hash).toBe('#/c/c1');
    expect(history.length).toBe(entries);
  });

  it('a delete the server refuses leaves the conversation listed and focus where it was', async () => {
    vi.stubGlobal(
      'fetch',
      mockFetch([
        (_url, init) =>
          init.method === 'DELETE' ? json({ status: 'error', message: 'Storage is unavailable.', code: 'storage_unavailable' }, 503) : undefined,
        server.route,
      ]).fn,
    );
    render(<App />);
    await screen.findByText('Earlier answer');
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    fireEvent.click(within(nav).getByRole('button', { name: 'Delete Older chat' }));
    fireEvent.click(within(screen.getByRole('alertdialog')).getByRole('button', { name: 'Delete' }));
    expect(await within(nav).findByText(/Could not delete/)).toBeTruthy();
    expect(within(nav).getByRole('button', { name: 'Older chat' })).toBeTruthy();
    expect(document.activeElement?.classList.contains('new-chat')).toBe(false);
  });

  it('a conversation deleted on another device leaves the list when deleted here too, or when opened', async () => {
    render(<App />);
    await screen.findByText('Earlier answer');
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    // Gone from the server behind this tab's back: the other device's delete.
    server.conversations.splice(0, server.conversations.length);
    fireEvent.click(within(nav).getByRole('button', { name: 'Older chat' }));
    expect(await screen.findByText(/does not exist/)).toBeTruthy();
    await waitFor(() => expect(within(nav).queryByRole('button', { name: 'Older chat' })).toBeNull());
    fireEvent.click(within(nav).getByRole('button', { name: 'Delete Recent chat' }));
    fireEvent.click(within(screen.getByRole('alertdialog')).getByRole('button', { name: 'Delete' }));
    await waitFor(() => expect(within(nav).queryByRole('button', { name: 'Recent chat' })).toBeNull());
    expect(within(nav).queryByText(/Could not delete/)).toBeNull();
  });
});

describe('other tabs of the same browser', () => {
  let otherTab: BroadcastChannel;
  let heard: unknown[];
  beforeEach(() => {
    otherTab = new BroadcastChannel('chat-tabs');
    heard = [];
    otherTab.onmessage = (message) => heard.push(message.data);
  });
  afterEach(() => otherTab.close());

  it('show what another tab created, renamed, deleted and stored, without a reload', async () => {
    await renderLoaded();
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    otherTab.postMessage({ kind: 'upserted', conversation: conv('n9', 'Made in another tab', '2026-03-01T00:00:00Z') });
    expect(await within(nav).findByRole('button', { name: 'Made in another tab' })).toBeTruthy();
    otherTab.postMessage({ kind: 'upserted', conversation: conv('c1', 'Renamed in another tab', '2026-01-01T00:00:00Z') });
    expect(await within(nav).findByRole('button', { name: 'Renamed in another tab' })).toBeTruthy();
    otherTab.postMessage({ kind: 'deleted', id: 'n9' });
    await waitFor(() => expect(within(nav).queryByRole('button', { name: 'Made in another tab' })).toBeNull());

    const question = msg('c2', 'user', 'Asked in another tab');
    const answer = msg('c2', 'assistant', 'Answered in another tab');
    server.messages.c2?.push(question, answer);
    otherTab.postMessage({ kind: 'stored', id: 'c2', updatedAt: answer.created_at });
    const log = screen.getByRole('log');
    expect(await within(log).findByText('Answered in another tab')).toBeTruthy();
    expect(within(log).getAllByText('Earlier answer')).toHaveLength(1);
  });

  it('a conversation deleted in another tab while being renamed here says so, and the focus stays in the list', async () => {
    await renderLoaded();
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    // One the user is not at goes without a word.
    otherTab.postMessage({ kind: 'upserted', conversation: conv('n9', 'Made in another tab', '2026-03-01T00:00:00Z') });
    await within(nav).findByRole('button', { name: 'Made in another tab' });
    otherTab.postMessage({ kind: 'deleted', id: 'n9' });
    await waitFor(() => expect(within(nav).queryByRole('button', { name: 'Made in another tab' })).toBeNull());
    expect(within(nav).queryByRole('alert')).toBeNull();

    fireEvent.click(within(nav).getByRole('button', { name: 'Rename Older chat' }));
    const input = within(nav).getByRole('textbox', { name: 'Conversation title' });
    input.focus();
    fireEvent.change(input, { target: { value: 'Half a new na' } });
    otherTab.postMessage({ kind: 'deleted', id: 'c1' });
    expect((await within(nav).findByRole('alert')).textContent).toBe('That conversation was deleted in another tab.');
    // One that another tab found deleted on the server was deleted on another device.
    fireEvent.click(within(nav).getByRole('button', { name: 'Rename Recent chat' }));
    within(nav).getByRole('textbox', { name: 'Conversation title' }).focus();
    otherTab.postMessage({ kind: 'deleted', id: 'c2', onAnotherDevice: true });
    await waitFor(() => expect(within(nav).getByRole('alert').textContent).toBe('That conversation was deleted on another device.'));
    await waitFor(() => expect(document.activeElement).toBe(within(nav).getByRole('button', { name: /New chat/ })));
    expect(within(nav).queryByRole('textbox', { name: 'Conversation title' })).toBeNull();
  });

  it('tell the other tabs what this one created and stored', async () => {
    const sse = sseResponse();
    server.onStream(() => sse.response);
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Hello' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    const exchange = { user_message: msg('c2', 'user', 'Hello'), assistant_message: msg('c2', 'assistant', 'Hi.') };
    await act(async () => {
      sse.send(`event: done\ndata: ${JSON.stringify(exchange)}\n\n`);
      sse.close();
    });
    await waitFor(() => expect(heard).toContainEqual({ kind: 'stored', id: 'c2', updatedAt: exchange.assistant_message.created_at }));
    expect(heard).toContainEqual({ kind: 'replying', id: 'c2' });
    server.onStream(() => new Promise<Response>(() => undefined));
    await openNewChat();
    fireEvent.change(composer(), { target: { value: 'Begin a chat' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await waitFor(() => expect(heard.some((e) => (e as { kind: string }).kind === 'upserted')).toBe(true));
  });

  it('tell the other tabs of a send the model has not answered yet, which the server shows them waiting', async () => {
    server.onStream(() => new Promise<Response>(() => undefined));
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Slow to answer' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await within(screen.getByRole('log')).findByText('Thinking…');
    expect(heard).not.toContainEqual({ kind: 'replying', id: 'c2' });
    await waitFor(() => expect(heard).toContainEqual({ kind: 'replying', id: 'c2' }), { timeout: 2000 });
  });

  it('follow a reply another tab began in the conversation shown here, as it streams', async () => {
    await renderLoaded();
    const G = 'ffffffff-0000-4000-8000-000000000006';
    const ev = (seq: number, event: string, data: unknown) => `id: ${G}:${seq}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    const theirs = sseResponse();
    server.onFollow(() => theirs.response);
    // Another conversation's reply is not followed here.
    otherTab.postMessage({ kind: 'replying', id: 'c1' });
    otherTab.postMessage({ kind: 'replying', id: 'c2' });
    await act(async () =>
      theirs.send(ev(1, 'start', { generation_id: G, conversation_id: 'c2', content: 'Asked in the other tab' }) + ev(2, 'delta', { text: 'Coming along' })),
    );
    const log = screen.getByRole('log');
    expect(await within(log).findByText('Asked in the other tab')).toBeTruthy();
    expect(await within(log).findByText('Coming along')).toBeTruthy();
    const done = { user_message: msg('c2', 'user', 'Asked in the other tab'), assistant_message: msg('c2', 'assistant', 'Coming along nicely.') };
    server.messages.c2?.push(done.user_message, done.assistant_message);
    await act(async () => {
      theirs.send(ev(3, 'done', done));
      theirs.close();
    });
    expect(await within(log).findByText('Coming along nicely.')).toBeTruthy();
    expect(within(log).getAllByText('Asked in the other tab')).toHaveLength(1);
    expect(fetchMock.calls.filter((c) => c.url === '/api/v1/conversations/c1/stream')).toHaveLength(0);
  });

  it('an exchange another tab stored while this one streamed shows once this reply ends, in the server order', async () => {
    const sse = sseResponse();
    server.onStream(() => sse.response);
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'Mine' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await act(async () => sse.send('event: delta\ndata: {"text":"Mi"}\n\n'));
    const theirs = [msg('c2', 'user', 'Theirs'), msg('c2', 'assistant', 'Their answer')];
    const mine = { user_message: msg('c2', 'user', 'Mine'), assistant_message: msg('c2', 'assistant', 'My answer') };
    server.messages.c2?.push(...theirs, mine.user_message, mine.assistant_message);
    otherTab.postMessage({ kind: 'stored', id: 'c2', updatedAt: theirs[1]?.created_at });
    await act(async () => new Promise((r) => setTimeout(r, 50)));
    await act(async () => {
      sse.send(`event: done\ndata: ${JSON.stringify(mine)}\n\n`);
      sse.close();
    });
    const log = screen.getByRole('log');
    await within(log).findByText('Their answer');
    const bodies = [...log.querySelectorAll('article .message-body')].map((e) => e.textContent);
    expect(bodies).toEqual(['Earlier question', 'Earlier answer', 'Theirs', 'Their answer', 'Mine', 'My answer']);
  });

  it('the open conversation deleted in another tab says so, and a send starts a new chat', async () => {
    await renderLoaded();
    otherTab.postMessage({ kind: 'deleted', id: 'c2' });
    expect((await screen.findByRole('alert')).textContent).toContain('This conversation has been deleted');
    // Not "Chat", the name of a real conversation, while its messages stay on screen.
    expect(screen.getByRole('heading', { level: 1 }).textContent).toBe('Deleted conversation');
    expect(document.title).toBe('Deleted conversation – Chat');
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    expect(within(nav).queryByRole('button', { name: 'Recent chat' })).toBeNull();
    // A late rename from the tab that deleted it does not bring it back.
    otherTab.postMessage({ kind: 'upserted', conversation: conv('c2', 'Back from the dead', '2026-05-01T00:00:00Z') });
    const done = sseResponse();
    server.onStream(() => done.response);
    fireEvent.change(composer(), { target: { value: 'Fresh start' } });
    fireEvent.keyDown(composer(), { key: 'Enter' });
    await waitFor(() => expect(fetchMock.calls.filter((c) => c.method === 'POST' && c.url === '/api/v1/conversations')).toHaveLength(1));
    expect(within(nav).queryByRole('button', { name: 'Back from the dead' })).toBeNull();
  });

  it('drops a deleted conversation\'s unsent text, here and in another tab, but not where it is open', async () => {
    await renderLoaded();
    fireEvent.change(composer(), { target: { value: 'for the recent chat' } });
    fireEvent.click(screen.getByRole('button', { name: 'Older chat' }));
    await screen.findByText('No messages yet');
    fireEvent.change(composer(), { target: { value: 'for the older chat' } });
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    fireEvent.click(within(nav).getByRole('button', { name: 'Delete Older chat' }));
    fireEvent.click(within(screen.getByRole('alertdialog')).getByRole('button', { name: 'Delete' }));
    await waitFor(() => expect(within(nav).queryByRole('button', { name: 'Older chat' })).toBeNull());
    expect(loadDraft('c1')).toBe('');

    saveDraft('c9', 'for a chat deleted elsewhere');
    otherTab.postMessage({ kind: 'deleted', id: 'c9' });
    await waitFor(() => expect(loadDraft('c9')).toBe(''));
    await screen.findByText('Earlier answer');
    expect((composer() as HTMLTextAreaElement).value).toBe('for the recent chat');
    otherTab.postMessage({ kind: 'deleted', id: 'c2' });
    await screen.findByRole('alert');
    expect(loadDraft('c2')).toBe('for the recent chat');
  });

  it('a rename from another tab keeps the newer activity time, and activity beyond the page is fetched', async () => {
    await renderLoaded();
    const nav = screen.getByRole('navigation', { name: 'Conversations' });
    otherTab.postMessage({ kind: 'stored', id: 'c1', updatedAt: '2026-04-01T00:00:00Z' });
    await waitFor(() => expect(within(nav).getAllByRole('listitem')[0]?.textContent).toBe('Older chat'));
    otherTab.postMessage({ kind: 'upserted', conversation: conv('c1', 'Older, renamed', '2026-01-01T00:00:00Z') });
    await within(nav).findByRole('button', { name: 'Older, renamed' });
    expect(within(nav).getAllByRole('listitem')[0]?.textContent).toBe('Older, renamed');

    server.conversations.push(conv('c3', 'Beyond the page', '2026-06-01T00:00:00Z'));
    otherTab.postMessage({ kind: 'stored', id: 'c3', updatedAt: '2026-06-01T00:00:00Z' });
    await within(nav).findByRole('button', { name: 'Beyond the page' });
    expect(within(nav).getAllByRole('listitem')[0]?.textContent).toBe('Beyond the page');
  });
});
