//! How the fold writes times: RFC 3339 with microseconds, formatted by hand
//! (one per event) and read back the same way, and the one-entry cache that lets
//! the events of one decision share their formatted time.

use std::fmt;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde_json::Value;

/// The last timestamp `apply` formatted. The events of one decision share their
/// time, so most events reuse it instead of formatting it again.
#[derive(Clone, Default)]
pub(super) struct Stamp {
    at: Option<DateTime<Utc>>,
    text: String,
}

impl Stamp {
    pub(super) fn of(&mut self, at: DateTime<Utc>) -> Value {
        if self.at != Some(at) {
            self.at = Some(at);
            self.text = timestamp(at);
        }
        Value::String(self.text.clone())
    }
}

/// A cache, not state: two states are equal whatever they last formatted.
impl PartialEq for Stamp {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stamp")
    }
}

/// RFC 3339 with microseconds, the precision both databases keep:
/// `2026-11-25T03:04:05.123456Z`. Written by hand for four-digit years (what
/// chrono's `to_rfc3339_opts(Micros, true)` writes, at a fraction of its cost:
/// the fold formats one per event); chrono writes the rest and leap seconds.
pub fn timestamp(at: DateTime<Utc>) -> String {
    let nanos = at.nanosecond();
    if !(0..=9999).contains(&at.year()) || nanos >= 1_000_000_000 {
        return at.to_rfc3339_opts(SecondsFormat::Micros, true);
    }
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |end: usize, mut value: u32, width: usize| {
        for at in (end - width..end).rev() {
            text[at] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(4, at.year().unsigned_abs(), 4);
    put(7, at.month(), 2);
    put(10, at.day(), 2);
    put(13, at.hour(), 2);
    put(16, at.minute(), 2);
    put(19, at.second(), 2);
    put(26, nanos / 1000, 6);
    text.iter().map(|&b| char::from(b)).collect()
}

/// Reads back what [`timestamp`] writes, `None` for any other text (callers fall
/// back to a full RFC 3339 parser). Stored logs hold one per event, and chrono's
/// general parser was a visible part of reading them.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let bytes = text.as_bytes();
    if bytes.len() != 27 || &bytes[4..5] != b"-" || &bytes[10..11] != b"T" || bytes[26] != b'Z' {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        bytes[from..to].iter().try_fold(0_u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    let separators = [(7, b'-'), (13, b':'), (16, b':'), (19, b'.')];
    if separators.iter().any(|&(at, byte)| bytes[at] != byte) {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(number(0, 4)?).ok()?,
        number(5, 7)?,
        number(8, 10)?,
    )?;
    let time = date.and_hms_micro_opt(
        number(11, 13)?,
        number(14, 16)?,
        number(17, 19)?,
        number(20, 26)?,
    )?;
    Some(time.and_utc())
}
