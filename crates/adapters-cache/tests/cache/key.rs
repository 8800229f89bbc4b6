use std::collections::HashSet;

use adapters_cache::cache_key;
use domain::Role;

use crate::support::{context, scope};

#[test]
fn the_key_is_a_stable_sha256_hex() {
    let first = cache_key(&scope("m", "p"), &context(&[(Role::User, "hi")], "again"));
    let second = cache_key(&scope("m", "p"), &context(&[(Role::User, "hi")], "again"));
    assert_eq!(
        first, second,
        "the conversation id must not be part of the key"
    );
    assert_eq!(first.len(), 64);
    assert!(first
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
}

#[test]
fn moving_a_boundary_between_fields_changes_the_key() {
    let text = context(&[], "q");
    assert_ne!(
        cache_key(&scope("ab", "c"), &text),
        cache_key(&scope("a", "bc"), &text)
    );
    assert_ne!(
        cache_key(
            &scope("m", "p"),
            &context(&[(Role::User, "ab"), (Role::Assistant, "c")], "q")
        ),
        cache_key(
            &scope("m", "p"),
            &context(&[(Role::User, "a"), (Role::Assistant, "bc")], "q")
        ),
    );
    assert_ne!(
        cache_key(&scope("m", "p"), &context(&[(Role::User, "a b")], "c")),
        cache_key(&scope("m", "p"), &context(&[(Role::User, "a")], "b c")),
    );
    assert_ne!(
        cache_key(&scope("m", "p"), &context(&[(Role::User, "x")], "q")),
        cache_key(&scope("m", "p"), &context(&[(Role::Assistant, "x")], "q")),
        "the role is part of the key"
    );
}

/// Every way of cutting one string into model, system prompt, one history message and user text
/// gives a different key.
#[test]
fn every_split_of_the_same_bytes_has_its_own_key() {
    let whole = "abcdefg";
    let mut keys = HashSet::new();
    let mut splits = 0;
    for a in 0..=whole.len() {
        for b in a..=whole.len() {
            // The user text must not be blank: keep at least one character for it.
            for c in b..whole.len() {
                let (model, rest) = whole.split_at(a);
                let (prompt, rest) = rest.split_at(b - a);
                let (message, text) = rest.split_at(c - b);
                let history: Vec<(Role, &str)> = if message.is_empty() {
                    Vec::new()
                } else {
                    vec![(Role::User, message)]
                };
                keys.insert(cache_key(&scope(model, prompt), &context(&history, text)));
                splits += 1;
                // An empty history message is not the same as no history.
                keys.insert(cache_key(
                    &scope(model, prompt),
                    &context(&[(Role::User, message), (Role::Assistant, "")], text),
                ));
                splits += 1;
            }
        }
    }
    assert_eq!(keys.len(), splits);
}
