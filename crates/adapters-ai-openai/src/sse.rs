//! A small Server-Sent Events parser: bytes in (split anywhere), event data out.

/// Collects `data:` lines into events. Lines end with `\n` or `\r\n`; a blank line ends an event;
/// lines starting with `:` are comments; fields other than `data` are ignored. Several `data`
/// lines in one event are joined with `\n`, as the SSE specification says.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buffer: Vec<u8>,
    data: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NotUtf8;

impl SseParser {
    /// Feeds the next bytes of the body and returns the data of every event they complete.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, NotUtf8> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(offset) = self.buffer[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset;
            let mut line = &self.buffer[start..end];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            let line = std::str::from_utf8(line).map_err(|_| NotUtf8)?;
            if let Some(event) = process_line(&mut self.data, line) {
                events.push(event);
            }
            start = end + 1;
        }
        self.buffer.drain(..start);
        Ok(events)
    }

    /// The body ended: an unterminated last line and an event without its blank line still count.
    pub(crate) fn finish(&mut self) -> Result<Vec<String>, NotUtf8> {
        let mut events = Vec::new();
        if !self.buffer.is_empty() {
            let rest = std::mem::take(&mut self.buffer);
            let line = std::str::from_utf8(&rest).map_err(|_| NotUtf8)?;
            let line = line.strip_suffix('\r').unwrap_or(line);
            if let Some(event) = process_line(&mut self.data, line) {
                events.push(event);
            }
        }
        if let Some(event) = self.data.take() {
            events.push(event);
        }
        Ok(events)
    }
}

fn process_line(data: &mut Option<String>, line: &str) -> Option<String> {
    if line.is_empty() {
        return data.take();
    }
    if line.starts_with(':') {
        return None;
    }
    let (field, value) = match line.split_once(':') {
        Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
        None => (line, ""),
    };
    if field == "data" {
        match data {
            Some(existing) => {
                existing.push('\n');
                existing.push_str(value);
            }
            None => *data = Some(value.to_owned()),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(body: &[u8], piece: usize) -> Vec<String> {
        let mut parser = SseParser::default();
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
    fn a_last_event_without_blank_line_counts() {
        assert_eq!(
            parse_in_pieces(b"data: one\n\ndata: [DONE]", 4),
            vec!["one", "[DONE]"]
        );
    }

    #[test]
    fn invalid_utf8_is_reported() {
        let mut parser = SseParser::default();
        assert_eq!(parser.feed(b"data: \xff\n"), Err(NotUtf8));
    }
}
