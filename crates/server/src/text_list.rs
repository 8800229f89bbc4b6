//! List settings, written as a list in a file or comma-separated in an environment variable
//! (`CHAT__CORS__ALLOWED_ORIGINS=https://a.example,https://b.example`).

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// A list of texts, or one text of comma-separated items (each trimmed; an empty text is an
/// empty list).
pub fn comma_separated<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    deserializer.deserialize_any(TextListVisitor)
}

struct TextListVisitor;

impl<'de> Visitor<'de> for TextListVisitor {
    type Value = Vec<String>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a list of texts, or comma-separated text")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Vec<String>, E> {
        if value.trim().is_empty() {
            return Ok(Vec::new());
        }
        Ok(value
            .split(',')
            .map(|item| item.trim().to_owned())
            .collect())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Vec<String>, A::Error> {
        let mut list = Vec::with_capacity(items.size_hint().unwrap_or(0));
        while let Some(item) = items.next_element()? {
            list.push(item);
        }
        Ok(list)
    }
}
