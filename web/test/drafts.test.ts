import { afterEach, describe, expect, it, vi } from 'vitest';
import { clearSent, keepChatToCreate, loadDraft, markCreating, markSent, markTaken, restoreFirstSendsCutOff, saveDraft, sentHere, sentMarks, takeChatToCreate } from '../src/drafts';

describe('drafts', () => {
  afterEach(() => {
    vi.restoreAllMocks();
    sessionStorage.clear();
  });

  it('keeps a draft per conversation, and a new chat\'s apart, until it is emptied', () => {
    saveDraft('c1', 'for c1');
    saveDraft(null, 'for a new chat');
    expect(loadDraft('c1')).toBe('for c1');
    expect(loadDraft(null)).toBe('for a new chat');
    expect(loadDraft('c2')).toBe('');
    saveDraft('c1', '');
    expect(loadDraft('c1')).toBe('');
    expect(sessionStorage.length).toBe(1);
  });

  it('gives each first send a new chat id, unless one from its box got no answer, whose id it asks for again once', () => {
    const first = takeChatToCreate(null);
    const second = takeChatToCreate(null);
    expect(first).not.toBe(second);
    keepChatToCreate(null, first);
    keepChatToCreate('deleted-chat', second);
    expect(takeChatToCreate('c1')).not.toBe(first);
    expect(takeChatToCreate(null)).toBe(first);
    expect(takeChatToCreate(null)).not.toBe(first);
    expect(takeChatToCreate('deleted-chat')).toBe(second);
  });

  it('after a reload that cut a first send off, puts its text back and asks for the chat it was creating', () => {
    markCreating(null, 'cut off', 'chat-being-made');
    restoreFirstSendsCutOff();
    expect(loadDraft(null)).toBe('cut off');
    expect(takeChatToCreate(null)).toBe('chat-being-made');
    // A mark from before chats were chosen here brings its text back alone.
    markSent('creating:new', 'older client');
    restoreFirstSendsCutOff();
    expect(loadDraft(null)).toBe('older client\ncut off');
    expect(takeChatToCreate(null)).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7/);
  });

  it('knows which text this tab sent until its reply ends, over a reload and where storage refuses; the end of an earlier send keeps the mark of a later one', () => {
    markSent('c1', 'mine');
    expect(sentHere('c1', 'mine')).toBe(true);
    expect(sentHere('c1', 'another tab\'s')).toBe(false);
    expect(sentHere('c2', 'mine')).toBe(false);
    expect(sessionStorage.length).toBe(1);
    clearSent('c1', 'an earlier send');
    expect(sentHere('c1', 'mine')).toBe(true);
    clearSent('c1', 'mine');
    expect(sentHere('c1', 'mine')).toBe(false);
    expect(sessionStorage.length).toBe(0);
    vi.spyOn(Storage.prototype, 'setItem').mockImplementation(() => {
      throw new DOMException('full', 'QuotaExceededError');
    });
    markSent('c1', 'kept in memory');
    expect(sentHere('c1', 'kept in memory')).toBe(true);
    clearSent('c1', 'kept in memory');
    expect(sentHere('c1', 'kept in memory')).toBe(false);
  });

  it('keeps every message sent and not answered yet, each of the same text on its own, oldest first', () => {
    markSent('c1', 'first', 'm1');
    markSent('c1', 'again', 'm2');
    markSent('c1', 'again', 'm3');
    // Until the server takes them, they say since when they wait: a cut request may arrive late.
    expect(sentMarks('c1').every((mark) => typeof mark.untakenSince === 'number')).toBe(true);
    for (const text of ['first', 'again', 'again']) markTaken('c1', text);
    expect(sentMarks('c1')).toEqual([
      { text: 'first', after: 'm1' },
      { text: 'again', after: 'm2' },
      { text: 'again', after: 'm3' },
    ]);
    clearSent('c1', 'again');
    expect(sentMarks('c1')).toEqual([
      { text: 'first', after: 'm1' },
      { text: 'again', after: 'm3' },
    ]);
    expect(sentHere('c1', 'again')).toBe(true);
    // What earlier versions of the client stored: one mark, and before that the text alone.
    sessionStorage.setItem('chat:sent:c2', JSON.stringify({ text: 'one mark', after: 'm9' }));
    expect(sentMarks('c2')).toEqual([{ text: 'one mark', after: 'm9' }]);
    sessionStorage.setItem('chat:sent:c2', 'plain text');
    expect(sentMarks('c2')).toEqual([{ text: 'plain text', after: null }]);
    sessionStorage.setItem('chat:sent:c2', '[1, 2]');
    expect(sentMarks('c2')).toEqual([{ text: '[1, 2]', after: null }]);
  });

  it('keeps a draft the storage refuses in memory, never an older stored one', () => {
    saveDraft('c1', 'older');
    vi.spyOn(Storage.prototype, 'setItem').mockImplementation(() => {
      throw new DOMException('full', 'QuotaExceededError');
    });
    saveDraft('c1', 'newer');
    expect(loadDraft('c1')).toBe('newer');
    saveDraft('c1', '');
    expect(loadDraft('c1')).toBe('');
  });
});
