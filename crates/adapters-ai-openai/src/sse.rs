//! A small Server-Sent Events parser: bytes in (split anywhere), event data out.

/// Collects `data:` lines into events. Lines end with `\n`, `\r\n` or a lone `\r`, as the SSE
/// specification allows (a `\r\n` split between two chunks is still one line end); a blank line ends an event;
/// lines starting with `:` are comments; fields other than `data` are ignored. Several `data`
/// lines in one event are joined with `\n`, as the SSE specification says.
#[derive(Debug)]
pub(crate) struct SseParser {
    /// The bytes after the last line end: never holds a `\n` or `\r`, so only new bytes are searched.
    line: Vec<u8>,
    /// The last chunk ended with `\r`: a `\n` that starts the next one belongs to that line end.
    after_cr: bool,
    data: Option<String>,
    /// The longest line, and the longest data of one event, before the body is refused: a
    /// provider that never ends its line must not grow memory without end.
    max_event_bytes: usize,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SseError {
    #[error("the data is not UTF-8")]
    NotUtf8,
    #[error("an event is longer than {0} bytes")]
    TooLong(usize),
}

impl SseParser {
    pub(crate) fn new(max_event_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            after_cr: false,
            data: None,
            max_event_bytes,
        }
    }

    /// Feeds the next bytes of the body and returns the data of every event they complete.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<String>, SseError> {
        let mut events = Vec::new();
        if bytes.is_empty() {
            return Ok(events);
        }
        if std::mem::take(&mut self.after_cr) {
            bytes = bytes.strip_prefix(b"\n").unwrap_or(bytes);
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.extend_line(&bytes[..end])?;
            events.extend(self.end_line()?);
            let crlf = bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n');
            self.after_cr = bytes[end] == b'\r' && end + 1 == bytes.len();
            bytes = &bytes[end + if crlf { 2 } else { 1 }..];
        }
        self.extend_line(bytes)?;
        Ok(events)
    }

    /// The body ended: an unterminated last line and an event without its blank line still count.
    pub(crate) fn finish(&mut self) -> Result<Vec<String>, SseError> {
        let mut events = Vec::new();
        if !self.line.is_empty() {
            events.extend(self.end_line()?);
        }
        events.extend(self.data.take());
        Ok(events)
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > self.max_event_bytes {
            return Err(SseError::TooLong(self.max_event_bytes));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self) -> Result<Option<String>, SseError> {
        let line = std::str::from_utf8(&self.line).map_err(|_| SseError::NotUtf8)?;
        let event = process_line(&mut self.data, line, self.max_event_bytes)?;
        self.line.clear();
        Ok(event)
    }
}

fn process_line(
    data: &mut Option<String>,
    line: &str,
    max_event_bytes: usize,
) -> Result<Option<String>, SseError> {
    if line.is_empty() {
        return Ok(data.take());
    }
    if line.starts_with(':') {
        return Ok(None);
    }
    let (field, value) = match line.split_once(':') {
        Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
        None => (line, ""),
    };
    if field == "data" {
        match data {
            Some(existing) => {
                if existing.len() + 1 + value.len() > max_event_bytes {
                    return Err(SseError::TooLong(max_event_bytes));
                }
                existing.push('\n');
                existing.push_str(value);
            }
            None => *data = Some(value.to_owned()),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    fn parse_in_pieces(body: &[u8], piece: usize) -> Vec<String> {
        let mut parser = SseParser::new(LIMIT);
        let mut events = Vec::new();
        for chunk in body.chunks(piece) {
            events.extend(parser.feed(chunk).unwrap());
        }
        events.extend(parser.finish().unwrap());
        events
    }

    #[test]
    fn events_survive_any_split() {
        let body = ": keep-alive\r\n\r\ndata: {\"a\":\"é\"}\r\n\r\nevent: x\nid: 3\ndata:first\ndata: second\n\ndata: [DONE]\n\n";
        for piece in 1..body.len() {
            assert_eq!(
                parse_in_pieces(body.as_bytes(), piece),
                vec!["{\"a\":\"é\"}", "first\nsecond", "[DONE]"],
                "split every {piece} bytes"
            );
        }
    }

    #[test]
    fn a_lone_carriage_return_ends_a_line() {
        let body = "data: one\r\rdata: two\rdata: three\r\r\n\r\ndata: four\r\n\r";
        for piece in 1..body.len() {
            assert_eq!(
                parse_in_pieces(body.as_bytes(), piece),
                vec!["one", "two\nthree", "four"],
                "split every {piece} bytes"
            );
        }
    }

    #[test]
    fn a_last_event_without_blank_line_counts() {
        assert_eq!(
            parse_in_pieces(b"data: one\n\ndata: [DONE]", 4),
            vec!["one", "[DONE]"]
        );
    }

    #[test]
    fn invalid_utf8_is_reported() {
        let mut parser = SseParser::new(LIMIT);
        assert_eq!(parser.feed(b"data: \xff\n"), Err(SseError::NotUtf8));
    }

    #[test]
    fn lines_and_events_longer_than_the_bound_are_refused() {
        let mut parser = SseParser::new(16);
        assert_eq!(
            parser.feed(b"data: 0123456789\n").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(parser.feed(b"\n").unwrap(), vec!["0123456789"]);
        // One line arriving in pieces, never ended.
        assert_eq!(parser.feed(b": 0123456789").unwrap(), Vec::<String>::new());
        assert_eq!(parser.feed(b"ABCDEF"), Err(SseError::TooLong(16)));
        // A line ended in the same chunk.
        let mut parser = SseParser::new(16);
        assert_eq!(
            parser.feed(b"data: 0123456789ABCDEF\n"),
            Err(SseError::TooLong(16))
        );
        // Short data lines that add up within one event.
        let mut parser = SseParser::new(16);
        assert_eq!(
            parser.feed(b"data: 01234567\ndata: 89ABCDEF\n"),
            Err(SseError::TooLong(16))
        );
    }

    #[test]
    fn a_long_line_in_small_chunks_is_scanned_once() {
        // Rescanning the kept part of the line on every chunk made this take minutes.
        let line = format!("data: {}\n\n", "x".repeat(4 << 20));
        let mut parser = SseParser::new(8 << 20);
        let started = std::time::Instant::now();
        let mut events = Vec::new();
        for chunk in line.as_bytes().chunks(256) {
            events.extend(parser.feed(chunk).unwrap());
        }
        assert_eq!(events.len(), 1);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
