//! Decoding one metadata value from an untrusted file (the inverse of
//! `GgufValue::encode_into`).

use super::cursor::Cursor;
use super::{GgufArray, GgufError, GgufLimits, GgufValue, GgufValueType};

/// Reads the value of `key`, whose type tag `type_id` was just read.
pub(super) fn read_value(
    cursor: &mut Cursor<'_>,
    key: &str,
    type_id: u32,
    limits: &GgufLimits,
) -> Result<GgufValue, GgufError> {
    let context = || format!("the value of {key:?}");
    let Some(value_type) = GgufValueType::from_id(type_id) else {
        return Err(invalid(key, format!("unknown value type {type_id}")));
    };
    let value = match value_type {
        GgufValueType::U8 => GgufValue::U8(cursor.read_u8(&context)?),
        GgufValueType::I8 => GgufValue::I8(i8::from_le_bytes(cursor.read_array(&context)?)),
        GgufValueType::U16 => GgufValue::U16(u16::from_le_bytes(cursor.read_array(&context)?)),
        GgufValueType::I16 => GgufValue::I16(i16::from_le_bytes(cursor.read_array(&context)?)),
        GgufValueType::U32 => GgufValue::U32(cursor.read_u32(&context)?),
        GgufValueType::I32 => GgufValue::I32(i32::from_le_bytes(cursor.read_array(&context)?)),
        GgufValueType::F32 => GgufValue::F32(f32::from_le_bytes(cursor.read_array(&context)?)),
        GgufValueType::Bool => GgufValue::Bool(decode_bool(cursor.read_u8(&context)?, key)?),
        GgufValueType::String => GgufValue::String(read_string(cursor, key, limits)?),
        GgufValueType::Array => GgufValue::Array(read_array(cursor, key, limits)?),
        GgufValueType::U64 => GgufValue::U64(cursor.read_u64(&context)?),
        GgufValueType::I64 => GgufValue::I64(i64::from_le_bytes(cursor.read_array(&context)?)),
        GgufValueType::F64 => GgufValue::F64(f64::from_le_bytes(cursor.read_array(&context)?)),
    };
    Ok(value)
}

/// Reads an array's element type, count and elements. The count is checked against the limit
/// and against the bytes left (each element needs at least a few) before anything is allocated.
fn read_array(
    cursor: &mut Cursor<'_>,
    key: &str,
    limits: &GgufLimits,
) -> Result<GgufArray, GgufError> {
    let context = || format!("the array value of {key:?}");
    let element_type_id = cursor.read_u32(&context)?;
    let count = cursor.read_u64(&context)?;
    let element_type = match GgufValueType::from_id(element_type_id) {
        Some(GgufValueType::Array) => return Err(nested_array(key)),
        Some(element_type) => element_type,
        None => {
            return Err(invalid(
                key,
                format!("unknown array element type {element_type_id}"),
            ))
        }
    };
    if count > limits.max_array_len {
        return Err(GgufError::LimitExceeded {
            what: "metadata array length",
            value: count,
            limit: limits.max_array_len,
        });
    }
    cursor.ensure_available(
        count.saturating_mul(element_type.min_encoded_bytes()),
        &context,
    )?;
    // The elements fit in the bytes left, so the count fits in usize and every product below
    // stays within the file's length.
    let n_elements = count as usize;
    let mut take =
        |element_bytes: usize| cursor.take((n_elements * element_bytes) as u64, &context);
    let array = match element_type {
        GgufValueType::U8 => GgufArray::U8(take(1)?.to_vec()),
        GgufValueType::I8 => GgufArray::I8(decode_numbers(take(1)?, i8::from_le_bytes)),
        GgufValueType::U16 => GgufArray::U16(decode_numbers(take(2)?, u16::from_le_bytes)),
        GgufValueType::I16 => GgufArray::I16(decode_numbers(take(2)?, i16::from_le_bytes)),
        GgufValueType::U32 => GgufArray::U32(decode_numbers(take(4)?, u32::from_le_bytes)),
        GgufValueType::I32 => GgufArray::I32(decode_numbers(take(4)?, i32::from_le_bytes)),
        GgufValueType::F32 => GgufArray::F32(decode_numbers(take(4)?, f32::from_le_bytes)),
        GgufValueType::U64 => GgufArray::U64(decode_numbers(take(8)?, u64::from_le_bytes)),
        GgufValueType::I64 => GgufArray::I64(decode_numbers(take(8)?, i64::from_le_bytes)),
        GgufValueType::F64 => GgufArray::F64(decode_numbers(take(8)?, f64::from_le_bytes)),
        GgufValueType::Bool => GgufArray::Bool(
            take(1)?
                .iter()
                .map(|&byte| decode_bool(byte, key))
                .collect::<Result<_, _>>()?,
        ),
        GgufValueType::String => {
            // Grown as strings arrive rather than reserved: a `String` takes 24 bytes in memory
            // for each 8-byte empty string on disk.
            let mut strings = Vec::with_capacity(n_elements.min(4096));
            for _ in 0..n_elements {
                strings.push(read_string(cursor, key, limits)?);
            }
            GgufArray::String(strings)
        }
        // Refused above already; repeated so that no path can panic.
        GgufValueType::Array => return Err(nested_array(key)),
    };
    Ok(array)
}

fn read_string(
    cursor: &mut Cursor<'_>,
    key: &str,
    limits: &GgufLimits,
) -> Result<String, GgufError> {
    let bytes = cursor.read_string_bytes(limits.max_string_bytes, &|| {
        format!("a string in the value of {key:?}")
    })?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| invalid(key, "a string value is not UTF-8".to_owned()))
}

/// The spec allows only 0 and 1; anything else "should be treated as either the model being
/// invalid or the reader being buggy".
fn decode_bool(byte: u8, key: &str) -> Result<bool, GgufError> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(invalid(
            key,
            format!("bool byte is {other}, neither 0 nor 1"),
        )),
    }
}

/// Decodes `bytes` (a whole number of `N`-byte elements) into numbers.
fn decode_numbers<const N: usize, T>(bytes: &[u8], from_le_bytes: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .filter_map(|chunk| <[u8; N]>::try_from(chunk).ok())
        .map(from_le_bytes)
        .collect()
}

fn nested_array(key: &str) -> GgufError {
    invalid(
        key,
        "arrays of arrays are not supported (ggml refuses them too)".to_owned(),
    )
}

fn invalid(key: &str, reason: String) -> GgufError {
    GgufError::InvalidMetadata {
        key: key.to_owned(),
        reason,
    }
}
