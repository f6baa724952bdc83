//! Reading the scripts' replies.

use purly::{StoreError, StoredDiff, StoredKey};
use redis::Value;

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unexpected reply from Redis: {what}"))
}

/// A reply element as text.
pub(crate) fn text(value: &Value) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes.clone()).map_err(|_| corrupt("not UTF-8"))
        }
        Value::SimpleString(text) => Ok(text.clone()),
        Value::Int(n) => Ok(n.to_string()),
        Value::Okay => Ok("OK".to_owned()),
        _ => Err(corrupt("not text")),
    }
}

/// A reply element as a number.
pub(crate) fn number(value: &Value) -> Result<u64, StoreError> {
    text(value)?.parse().map_err(|_| corrupt("not a version"))
}

/// A reply element as an array.
pub(crate) fn array(value: &Value) -> Result<&[Value], StoreError> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(corrupt("not an array")),
    }
}

/// Stream entries (`XRANGE`: `[[id, [field, value, ...]], ...]`) as diffs; the id's first
/// part is the version, field `d` the diff, field `k` (on a batch's last entry) the client key
/// records the batch wrote.
pub(crate) fn entries(value: &Value) -> Result<Vec<StoredDiff>, StoreError> {
    array(value)?
        .iter()
        .map(|entry| {
            let [id, fields] = array(entry)? else {
                return Err(corrupt("a stream entry is [id, fields]"));
            };
            let id = text(id)?;
            let version = id
                .split_once('-')
                .and_then(|(v, _)| v.parse().ok())
                .ok_or_else(|| corrupt("a stream id is <version>-0"))?;
            let (mut json, mut keys) = (None, None);
            for pair in array(fields)?.chunks(2) {
                match (pair.first().map(text).transpose()?.as_deref(), pair.get(1)) {
                    (Some("d"), Some(value)) => json = Some(text(value)?),
                    (Some("k"), Some(value)) => keys = Some(text(value)?),
                    _ => {}
                }
            }
            let json = json.ok_or_else(|| corrupt("an entry holds its diff"))?;
            Ok(StoredDiff {
                version,
                json,
                keys,
            })
        })
        .collect()
}

/// A hash's fields and values (`HGETALL`) as client key records.
pub(crate) fn client_keys(value: &Value) -> Result<Vec<StoredKey>, StoreError> {
    array(value)?
        .chunks(2)
        .map(|pair| match pair {
            [key, record] => Ok(StoredKey {
                key: text(key)?,
                record: text(record)?,
            }),
            _ => Err(corrupt("a hash reads as field, value pairs")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn stream_entries_become_diffs() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("3-0"),
                Value::Array(vec![bulk("d"), bulk(r#"{"a":1}"#)]),
            ]),
            Value::Array(vec![bulk("4-0"), Value::Array(vec![bulk("d"), bulk("{}")])]),
        ]);
        let diffs = entries(&reply).unwrap_or_default();
        assert_eq!(
            diffs.iter().map(|d| d.version).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(diffs[0].json, r#"{"a":1}"#);
        assert!(entries(&bulk("x")).is_err());
    }
}
