/**
 * A minimal Server-Sent Events parser (the `text/event-stream` format of the HTML standard).
 *
 * EventSource cannot POST, so the client reads the response body itself and feeds the decoded
 * text to this parser in whatever chunks the network delivers: a chunk may end in the middle of
 * a line, between `\r` and `\n`, or in the middle of an event.
 */

export interface SseEvent {
  /** The `event:` field, or "message" when absent. */
  event: string;
  /** The `data:` lines joined with "\n". */
  data: string;
  /** The last `id:` seen (it carries over to later events), if any: `<generation_id>:<sequence>` from chat-server. */
  id?: string;
}

export class SseParser {
  private buffer = '';
  private eventType = '';
  private dataLines: string[] = [];
  private hasData = false;
  private lastId: string | undefined;

  /** Feeds a chunk of decoded text; returns the events completed by it. */
  push(chunk: string): SseEvent[] {
    this.buffer += chunk;
    return this.drain(false);
  }

  /**
   * Signals the end of the stream; returns the events its last chunk completed. An event the
   * stream ends inside (no blank line after it) is dropped, as the standard says: a connection
   * cut mid-event must not pass for a whole one, whose id would mark it as received.
   */
  end(): SseEvent[] {
    const events = this.drain(true);
    this.buffer = '';
    this.eventType = '';
    this.dataLines = [];
    this.hasData = false;
    return events;
  }

  private drain(final: boolean): SseEvent[] {
    const events: SseEvent[] = [];
    const lineEnd = /\r\n|\n|\r/g;
    let start = 0;
    let match: RegExpExecArray | null;
    while ((match = lineEnd.exec(this.buffer)) !== null) {
      // A lone "\r" at the very end may be the first half of "\r\n": wait for the next chunk.
      if (!final && match[0] === '\r' && match.index === this.buffer.length - 1) break;
      this.processLine(this.buffer.slice(start, match.index), events);
      start = match.index + match[0].length;
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }

  private processLine(line: string, events: SseEvent[]): void {
    if (line === '') {
      this.dispatch(events);
      return;
    }
    if (line.startsWith(':')) return; // comment / keep-alive
    const colon = line.indexOf(':');
    let field: string;
    let value: string;
    if (colon === -1) {
      field = line;
      value = '';
    } else {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
    }
    switch (field) {
      case 'event':
        this.eventType = value;
        break;
      case 'data':
        this.dataLines.push(value);
        this.hasData = true;
        break;
      case 'id':
        if (!value.includes('\0')) this.lastId = value;
        break;
      default:
        // "retry" and unknown fields are ignored.
        break;
    }
  }

  private dispatch(events: SseEvent[]): void {
    if (this.hasData) {
      const event: SseEvent = { event: this.eventType || 'message', data: this.dataLines.join('\n') };
      if (this.lastId !== undefined) event.id = this.lastId;
      events.push(event);
    }
    this.eventType = '';
    this.dataLines = [];
    this.hasData = false;
  }
}
