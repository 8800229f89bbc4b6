//! Settings that take one of a few names. Read by the `config` crate, a derived enum's refusal
//! names the Rust type ("enum LogFormat does not have variant constructor text"), not what may be
//! written; read as text and matched here, the refusal lists every value the key takes.

use std::fmt;

use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, IntoDeserializer};

/// One of the names of `T`'s variants, written exactly (the names are lowercase).
pub fn one_of<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let written = String::deserialize(deserializer)?;
    let name: de::value::StrDeserializer<'_, Refusal> = written.as_str().into_deserializer();
    T::deserialize(name).map_err(|Refusal(why)| de::Error::custom(why))
}

#[derive(Debug)]
struct Refusal(String);

impl de::Error for Refusal {
    fn custom<T: fmt::Display>(why: T) -> Self {
        Self(why.to_string())
    }

    fn unknown_variant(written: &str, names: &'static [&'static str]) -> Self {
        let names: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
        Self(format!("`{written}` is not one of {}", names.join(", ")))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}
