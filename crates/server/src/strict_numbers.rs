//! Numeric settings read exactly as written. The `config` crate converts leniently on its own:
//! it rounds `1.5` to 2 and reads `true`, `yes` and `on` as 1, so `workers = 1.5` or
//! `CHAT__SERVER__PORT=yes` would start a server configured differently from what was written.
//! These deserializers refuse such values, and the error names the key. A whole number written
//! as a float (`2.0`) is taken at its value. Environment variables arrive as strings (so that text
//! settings such as `007` stay as written) and are read here the same way.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Unexpected, Visitor};

/// A whole number in `T`'s range, written as an integer, a whole float or a string of an integer.
pub fn integer<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    deserializer.deserialize_any(IntegerVisitor(PhantomData))
}

struct IntegerVisitor<T>(PhantomData<T>);

impl<T: TryFrom<i128>> IntegerVisitor<T> {
    fn in_range<E: de::Error>(&self, value: i128) -> Result<T, E> {
        T::try_from(value)
            .map_err(|_| E::invalid_value(Unexpected::Other("a number out of range"), self))
    }
}

impl<T: TryFrom<i128>> Visitor<'_> for IntegerVisitor<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a whole number")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        self.in_range(value.into())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        self.in_range(value.into())
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<T, E> {
        self.in_range(value)
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<T, E> {
        // Past i128 is past every setting's type too, so i128::MAX is refused the same way.
        self.in_range(i128::try_from(value).unwrap_or(i128::MAX))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<T, E> {
        if !value.is_finite() || value.fract() != 0.0 {
            return Err(E::invalid_type(Unexpected::Float(value), &self));
        }
        // Saturates past i128, which no setting's type reaches either.
        self.in_range(value as i128)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        let written = value.trim();
        if let Ok(number) = written.parse::<i128>() {
            return self.in_range(number);
        }
        // Past i128, or a whole number written as a float: as if it had been written unquoted.
        match written.parse::<f64>() {
            Ok(number) if number.is_finite() => self.visit_f64(number),
            _ => Err(E::invalid_value(Unexpected::Str(value), &self)),
        }
    }
}

/// A number, written as one or as a string of one; never a boolean.
pub fn number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    deserializer.deserialize_any(NumberVisitor)
}

struct NumberVisitor;

impl Visitor<'_> for NumberVisitor {
    type Value = f64;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a number")
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<f64, E> {
        Ok(value)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<f64, E> {
        Ok(value as f64)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<f64, E> {
        Ok(value as f64)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<f64, E> {
        value
            .trim()
            .parse()
            .map_err(|_| E::invalid_value(Unexpected::Str(value), &self))
    }
}
