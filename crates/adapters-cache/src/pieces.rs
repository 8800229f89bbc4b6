/// Splits after each run of whitespace, so the pieces concatenate back to the exact text.
pub(crate) fn words(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut in_space = false;
    for character in text.chars() {
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

    #[test]
    fn words_concatenate_to_the_text() {
        for text in [
            "Hi there!  I'm\nhere.",
            " leading",
            "trailing ",
            "one",
            "",
            "é ü\t∑",
        ] {
            assert_eq!(words(text).concat(), text);
        }
        assert_eq!(words("a b  c"), vec!["a ", "b  ", "c"]);
    }
}
