import { describe, expect, it } from 'vitest';
import { parseEventId } from '../src/api/client';
import { SseParser, type SseEvent } from '../src/api/sse';

const stream =
  'event: delta\ndata: {"text":"Hi"}\n\n' +
  'id: 7\nevent: delta\ndata: {"text":" there"}\n\n' +
  ': keep-alive\n\n' +
  'event: done\ndata: {"ok":true}\n\n';

const expected: SseEvent[] = [
  { event: 'delta', data: '{"text":"Hi"}' },
  { event: 'delta', data: '{"text":" there"}', id: '7' },
  { event: 'done', data: '{"ok":true}', id: '7' },
];

function parseInChunks(text: string, cuts: number[]): SseEvent[] {
  const parser = new SseParser();
  const out: SseEvent[] = [];
  let last = 0;
  for (const cut of [...cuts, text.length]) {
    out.push(...parser.push(text.slice(last, cut)));
    last = cut;
  }
  out.push(...parser.end());
  return out;
}

describe('SseParser', () => {
  it('parses a whole stream', () => {
    expect(parseInChunks(stream, [])).toEqual(expected);
  });

  it('gives the same events wherever a single chunk boundary falls', () => {
    for (let i = 0; i <= stream.length; i++) {
      expect(parseInChunks(stream, [i]), `split at ${i}`).toEqual(expected);
    }
  });

  it('survives one character per chunk', () => {
    const cuts = Array.from({ length: stream.length }, (_, i) => i);
    expect(parseInChunks(stream, cuts)).toEqual(expected);
  });

  it('handles CRLF and CR line endings, also with \\r and \\n in different chunks', () => {
    const crlf = stream.replace(/\n/g, '\r\n');
    for (let i = 0; i <= crlf.length; i++) expect(parseInChunks(crlf, [i]), `split at ${i}`).toEqual(expected);
    expect(parseInChunks(stream.replace(/\n/g, '\r'), [])).toEqual(expected);
  });

  it('joins multi-line data with newlines and strips only one leading space', () => {
    const events = parseInChunks('data: a\ndata:  b\ndata\n\n', []);
    expect(events).toEqual([{ event: 'message', data: 'a\n b\n' }]);
  });

  it('only emits an event once its blank line arrives', () => {
    const parser = new SseParser();
    expect(parser.push('event: delta\ndata: {"text":"x"}\n')).toEqual([]);
    expect(parser.push('\n')).toEqual([{ event: 'delta', data: '{"text":"x"}' }]);
  });

  it('ignores blocks without data and unknown fields', () => {
    expect(parseInChunks('event: ping\n\nretry: 100\nfoo: bar\ndata: x\n\n', [])).toEqual([{ event: 'message', data: 'x' }]);
  });

  it('drops an event the stream ends inside, before its blank line', () => {
    expect(parseInChunks('event: done\ndata: {}', [])).toEqual([]);
    expect(parseInChunks('event: done\ndata: {}\n', [])).toEqual([]);
    expect(parseInChunks('data: a\n\nid: 9\nevent: delta\ndata: {"text":"He', [3])).toEqual([{ event: 'message', data: 'a' }]);
    expect(parseInChunks('data: a\r\n\r', [])).toEqual([{ event: 'message', data: 'a' }]);
  });

  it('attaches `<generation_id>:<sequence>` ids to their events, split anywhere', () => {
    const gen = '0b8e2f4c-1d7a-4c3e-9f00-123456789abc';
    const text =
      `id: ${gen}:1\nevent: start\ndata: {"generation_id":"${gen}","content":"hi"}\n\n` +
      `id: ${gen}:2\nevent: delta\ndata: {"text":"Hel"}\n\n` +
      `event: delta\nid: ${gen}:3\ndata: {"text":"lo"}\n\n`;
    const want = [
      { event: 'start', data: `{"generation_id":"${gen}","content":"hi"}`, id: `${gen}:1` },
      { event: 'delta', data: '{"text":"Hel"}', id: `${gen}:2` },
      { event: 'delta', data: '{"text":"lo"}', id: `${gen}:3` },
    ];
    for (let i = 0; i <= text.length; i++) expect(parseInChunks(text, [i]), `split at ${i}`).toEqual(want);
    expect(parseEventId(`${gen}:12`)).toEqual({ generation: gen, sequence: 12 });
    expect(parseEventId('7')).toBeNull();
    expect(parseEventId(`${gen}:x`)).toBeNull();
  });
});
