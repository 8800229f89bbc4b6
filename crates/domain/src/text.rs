use thiserror::Error;

/// Why a piece of user-supplied text was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TextError {
    #[error("must not be blank")]
    Blank,
    #[error("must be at most {max} characters, got {actual}")]
    TooLong { max: usize, actual: usize },
    /// NUL cannot be stored by every backend (PostgreSQL text refuses it), so no backend accepts it.
    #[error("must not contain NUL characters")]
    NulCharacter,
}

/// Whether an assistant's reply says nothing: empty, or only whitespace and NUL characters
/// (which storage drops). Such a reply is no answer: neither stored nor worth caching.
pub fn is_blank_reply(reply: &str) -> bool {
    reply
        .chars()
        .all(|character| character == '\0' || character.is_whitespace())
}

fn validate(text: &str, max_chars: usize) -> Result<(), TextError> {
    if text.trim().is_empty() {
        return Err(TextError::Blank);
    }
    if text.contains('\0') {
        return Err(TextError::NulCharacter);
    }
    // Count lazily: a body that is far too long should not be walked to the end.
    let actual = text.chars().take(max_chars + 1).count();
    if actual > max_chars {
        return Err(TextError::TooLong {
            max: max_chars,
            actual: text.chars().count(),
        });
    }
    Ok(())
}

/// The text of a message: not blank, no NUL, at most the configured number of characters. Kept
/// exactly as written (no trimming), because users expect their words back byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    pub fn new(text: impl Into<String>, max_chars: usize) -> Result<Self, TextError> {
        let text = text.into();
        validate(&text, max_chars)?;
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The title of a conversation: not blank, at most [`ConversationTitle::MAX_CHARS`] as sent,
/// stored trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationTitle(String);

impl ConversationTitle {
    pub const MAX_CHARS: usize = 200;
    pub const DEFAULT: &'static str = "New chat";

    pub fn new(title: &str) -> Result<Self, TextError> {
        // The limit applies to the title as sent, as the OpenAPI document's `maxLength` says:
        // whitespace trimmed off afterwards does not make room for more.
        validate(title, Self::MAX_CHARS)?;
        Ok(Self(title.trim().to_owned()))
    }

    pub fn default_title() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Splits a whole reply into word-sized pieces for streaming it: each piece ends after a run of
/// whitespace, so the pieces concatenate back to exactly the reply.
pub fn stream_pieces(reply: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut in_space = false;
    for character in reply.chars() {
        if in_space && !character.is_whitespace() {
            pieces.push(std::mem::take(&mut current));
        }
        in_space = character.is_whitespace();
        current.push(character);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pieces_end_after_whitespace() {
        assert_eq!(stream_pieces("a b  c"), vec!["a ", "b  ", "c"]);
        assert!(stream_pieces("").is_empty());
    }

    #[test]
    fn blank_text_is_rejected() {
        for blank in ["", " ", "\n\t  \r\n", "\u{3000}"] {
            assert_eq!(
                MessageText::new(blank, 10),
                Err(TextError::Blank),
                "{blank:?}"
            );
        }
    }

    #[test]
    fn limit_counts_characters_not_bytes() {
        assert!(MessageText::new("é".repeat(10), 10).is_ok());
        assert_eq!(
            MessageText::new("é".repeat(11), 10),
            Err(TextError::TooLong {
                max: 10,
                actual: 11
            })
        );
    }

    #[test]
    fn nul_is_rejected() {
        assert_eq!(MessageText::new("a\0b", 10), Err(TextError::NulCharacter));
    }

    #[test]
    fn titles_are_trimmed() {
        assert_eq!(ConversationTitle::new("  Trip  ").unwrap().as_str(), "Trip");
        assert_eq!(ConversationTitle::new("   "), Err(TextError::Blank));
    }

    #[test]
    fn a_title_is_limited_as_sent_not_as_trimmed() {
        let longest = "é".repeat(ConversationTitle::MAX_CHARS);
        assert_eq!(ConversationTitle::new(&longest).unwrap().as_str(), longest);
        let padded = format!("\r{}", "é".repeat(ConversationTitle::MAX_CHARS));
        assert_eq!(
            ConversationTitle::new(&padded),
            Err(TextError::TooLong {
                max: ConversationTitle::MAX_CHARS,
                actual: ConversationTitle::MAX_CHARS + 1
            })
        );
    }

    proptest! {
        #[test]
        fn accepted_text_is_kept_exactly(text in "\\PC{1,64}") {
            prop_assume!(!text.trim().is_empty());
            let accepted = MessageText::new(text.clone(), 64).unwrap();
            prop_assert_eq!(accepted.as_str(), text.as_str());
        }

        #[test]
        fn pieces_concatenate_to_the_reply(reply in any::<String>()) {
            prop_assert_eq!(stream_pieces(&reply).concat(), reply);
        }

        #[test]
        fn validation_agrees_with_its_definition(text in any::<String>(), max in 1usize..40) {
            let expected_ok = !text.trim().is_empty()
                && !text.contains('\0')
                && text.chars().count() <= max;
            prop_assert_eq!(MessageText::new(text, max).is_ok(), expected_ok);
        }
    }
}
