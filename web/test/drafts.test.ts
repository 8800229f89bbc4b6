import { afterEach, describe, expect, it, vi } from 'vitest';
import { loadDraft, saveDraft } from '../src/drafts';

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
