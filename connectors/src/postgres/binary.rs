//! PostgreSQL's binary `COPY` format decoded straight into Arrow builders: which Arrow type
//! each PostgreSQL type becomes ([`Kind`]) and the row-by-row decoder ([`Decoder`]).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder, make_builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use bytes::{Buf, BytesMut};
use tokio_postgres::types::{Kind as PgKind, Type};

use crate::ConnectorError;

use super::BATCH_ROWS;

/// Days and microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// How one column (or array element) is decoded.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    Numeric { precision: u8, scale: i8 },
    Text,
    Json,
    Jsonb,
    Uuid,
    Bytes,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Array(Box<Kind>),
}

impl Kind {
    /// The decoder for a PostgreSQL type; `None` for types read as text.
    pub(super) fn of(t: &Type, modifier: i32) -> Option<Kind> {
        Some(match *t {
            Type::BOOL => Kind::Bool,
            Type::INT2 => Kind::I16,
            Type::INT4 => Kind::I32,
            Type::INT8 => Kind::I64,
            Type::FLOAT4 => Kind::F32,
            Type::FLOAT8 => Kind::F64,
            Type::NUMERIC => {
                // typmod = ((precision << 16) | scale) + 4; -1 when unconstrained.
                let (precision, scale) = if modifier >= 4 {
                    let m = modifier - 4;
                    (((m >> 16) & 0xffff) as u8, (m & 0xffff) as i8)
                } else {
                    (38, 10)
                };
                if precision > 38 {
                    return None;
                }
                Kind::Numeric { precision, scale }
            }
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Kind::Text,
            Type::JSON => Kind::Json,
            Type::JSONB => Kind::Jsonb,
            Type::UUID => Kind::Uuid,
            Type::BYTEA => Kind::Bytes,
            Type::DATE => Kind::Date,
            Type::TIME => Kind::Time,
            Type::TIMESTAMP => Kind::Timestamp,
            Type::TIMESTAMPTZ => Kind::TimestampTz,
            _ => match t.kind() {
                PgKind::Array(member) => Kind::Array(Box::new(Kind::of(member, modifier)?)),
                _ => return None,
            },
        })
    }

    fn data_type(&self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::I16 => DataType::Int16,
            Kind::I32 => DataType::Int32,
            Kind::I64 => DataType::Int64,
            Kind::F32 => DataType::Float32,
            Kind::F64 => DataType::Float64,
            Kind::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            Kind::Text | Kind::Json | Kind::Jsonb | Kind::Uuid => DataType::Utf8,
            Kind::Bytes => DataType::Binary,
            Kind::Date => DataType::Date32,
            Kind::Time => DataType::Time64(TimeUnit::Microsecond),
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::Array(inner) => DataType::List(Arc::new(inner.field("item"))),
        }
    }

    pub(super) fn field(&self, name: &str) -> Field {
        let field = Field::new(name, self.data_type(), true);
        if matches!(self, Kind::Json | Kind::Jsonb) {
            field.with_metadata(HashMap::from([(
                "ARROW:extension:name".to_string(),
                "arrow.json".to_string(),
            )]))
        } else {
            field
        }
    }
}

/// Decodes the binary COPY stream into Arrow batches.
pub(super) struct Decoder {
    schema: SchemaRef,
    kinds: Vec<Kind>,
    builders: Vec<Box<dyn ArrayBuilder>>,
    buffer: BytesMut,
    header_seen: bool,
    pub(super) rows: usize,
}

fn bad(what: &str) -> ConnectorError {
    ConnectorError::Source(format!(
        "PostgreSQL sent a malformed binary COPY stream ({what})"
    ))
}

impl Decoder {
    pub(super) fn new(schema: SchemaRef, kinds: Vec<Kind>) -> Self {
        let builders = Self::builders(&schema);
        Self {
            schema,
            kinds,
            builders,
            buffer: BytesMut::new(),
            header_seen: false,
            rows: 0,
        }
    }

    fn builders(schema: &Schema) -> Vec<Box<dyn ArrayBuilder>> {
        schema
            .fields()
            .iter()
            .map(|f| make_builder(f.data_type(), BATCH_ROWS))
            .collect()
    }

    /// Adds bytes and decodes every complete row in the buffer.
    pub(super) fn push(&mut self, chunk: &[u8]) -> Result<(), ConnectorError> {
        self.buffer.extend_from_slice(chunk);
        if !self.header_seen {
            // "PGCOPY\n\xff\r\n\0", flags (i32), header extension length (i32) + extension.
            if self.buffer.len() < 19 {
                return Ok(());
            }
            if &self.buffer[..11] != b"PGCOPY\n\xff\r\n\0" {
                return Err(bad("no signature"));
            }
            let extension = i32::from_be_bytes(self.buffer[15..19].try_into().unwrap()) as usize;
            if self.buffer.len() < 19 + extension {
                return Ok(());
            }
            self.buffer.advance(19 + extension);
            self.header_seen = true;
        }
        while let Some(consumed) = self.row_length()? {
            let row = self.buffer.split_to(consumed);
            if consumed == 2 {
                break; // the trailer (-1)
            }
            let mut at = 2;
            for column in 0..self.kinds.len() {
                let len = i32::from_be_bytes(row[at..at + 4].try_into().unwrap());
                at += 4;
                let value = if len < 0 {
                    None
                } else {
                    let v = &row[at..at + len as usize];
                    at += len as usize;
                    Some(v)
                };
                append(&self.kinds[column], self.builders[column].as_mut(), value).map_err(
                    |e| {
                        ConnectorError::Source(format!(
                            "column `{}`: {e}",
                            self.schema.field(column).name()
                        ))
                    },
                )?;
            }
            self.rows += 1;
        }
        Ok(())
    }

    /// The length of the complete row at the start of the buffer, if it is all there.
    fn row_length(&self) -> Result<Option<usize>, ConnectorError> {
        let b = &self.buffer;
        if b.len() < 2 {
            return Ok(None);
        }
        let fields = i16::from_be_bytes([b[0], b[1]]);
        if fields == -1 {
            return Ok(Some(2));
        }
        if fields as usize != self.kinds.len() {
            return Err(bad("unexpected field count"));
        }
        let mut at = 2;
        for _ in 0..fields {
            if b.len() < at + 4 {
                return Ok(None);
            }
            let len = i32::from_be_bytes(b[at..at + 4].try_into().unwrap());
            at += 4 + len.max(0) as usize;
            if b.len() < at {
                return Ok(None);
            }
        }
        Ok(Some(at))
    }

    pub(super) fn flush(&mut self) -> Result<RecordBatch, ConnectorError> {
        let columns = self.builders.iter_mut().map(|b| b.finish()).collect();
        self.rows = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    pub(super) fn finish(&mut self) -> Result<Option<RecordBatch>, ConnectorError> {
        if !self.buffer.is_empty() {
            return Err(bad("trailing bytes"));
        }
        if self.rows == 0 {
            return Ok(None);
        }
        self.flush().map(Some)
    }
}

macro_rules! builder {
    ($b:expr, $t:ty) => {
        $b.as_any_mut()
            .downcast_mut::<$t>()
            .expect("builder made for this kind")
    };
}

fn be<const N: usize>(v: &[u8]) -> Result<[u8; N], String> {
    v.try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", v.len()))
}

/// Appends one binary value (or null) to the builder made for `kind`.
fn append(kind: &Kind, b: &mut dyn ArrayBuilder, value: Option<&[u8]>) -> Result<(), String> {
    match kind {
        Kind::Bool => {
            builder!(b, BooleanBuilder).append_option(value.map(|v| v.first() == Some(&1)))
        }
        Kind::I16 => builder!(b, Int16Builder)
            .append_option(value.map(|v| be(v).map(i16::from_be_bytes)).transpose()?),
        Kind::I32 => builder!(b, Int32Builder)
            .append_option(value.map(|v| be(v).map(i32::from_be_bytes)).transpose()?),
        Kind::I64 => builder!(b, Int64Builder)
            .append_option(value.map(|v| be(v).map(i64::from_be_bytes)).transpose()?),
        Kind::F32 => builder!(b, Float32Builder)
            .append_option(value.map(|v| be(v).map(f32::from_be_bytes)).transpose()?),
        Kind::F64 => builder!(b, Float64Builder)
            .append_option(value.map(|v| be(v).map(f64::from_be_bytes)).transpose()?),
        Kind::Numeric { scale, .. } => builder!(b, Decimal128Builder)
            .append_option(value.map(|v| numeric(v, *scale)).transpose()?.flatten()),
        Kind::Text | Kind::Json => builder!(b, StringBuilder).append_option(
            value
                .map(|v| std::str::from_utf8(v).map_err(|e| e.to_string()))
                .transpose()?,
        ),
        Kind::Jsonb => builder!(b, StringBuilder).append_option(
            value
                .map(|v| {
                    std::str::from_utf8(v.get(1..).unwrap_or_default()).map_err(|e| e.to_string())
                })
                .transpose()?,
        ),
        Kind::Uuid => builder!(b, StringBuilder).append_option(
            value
                .map(|v| be::<16>(v).map(|u| uuid::Uuid::from_bytes(u).hyphenated().to_string()))
                .transpose()?,
        ),
        Kind::Bytes => builder!(b, BinaryBuilder).append_option(value),
        Kind::Date => builder!(b, Date32Builder).append_option(
            value
                .map(|v| be(v).map(i32::from_be_bytes))
                .transpose()?
                .filter(|d| *d != i32::MAX && *d != i32::MIN)
                .map(|d| d + PG_EPOCH_DAYS),
        ),
        Kind::Time => builder!(b, Time64MicrosecondBuilder)
            .append_option(value.map(|v| be(v).map(i64::from_be_bytes)).transpose()?),
        Kind::Timestamp | Kind::TimestampTz => builder!(b, TimestampMicrosecondBuilder)
            .append_option(
                value
                    .map(|v| be(v).map(i64::from_be_bytes))
                    .transpose()?
                    .filter(|t| *t != i64::MAX && *t != i64::MIN)
                    .map(|t| t + PG_EPOCH_MICROS),
            ),
        Kind::Array(inner) => {
            let list = builder!(b, ListBuilder<Box<dyn ArrayBuilder>>);
            match value {
                None => list.append_null(),
                Some(v) => {
                    array(inner, list.values().as_mut(), v)?;
                    list.append(true);
                }
            }
        }
    }
    Ok(())
}

/// Appends the elements of a binary array (any number of dimensions, flattened).
fn array(inner: &Kind, values: &mut dyn ArrayBuilder, v: &[u8]) -> Result<(), String> {
    let int = |at: usize| -> Result<i32, String> {
        Ok(i32::from_be_bytes(be(v
            .get(at..at + 4)
            .ok_or("short array")?)?))
    };
    let dims = int(0)?.max(0) as usize;
    let mut count = if dims == 0 { 0 } else { 1usize };
    for d in 0..dims {
        count *= int(12 + d * 8)?.max(0) as usize;
    }
    let mut at = 12 + dims * 8;
    for _ in 0..count {
        let len = int(at)?;
        at += 4;
        if len < 0 {
            append(inner, values, None)?;
        } else {
            let end = at + len as usize;
            append(inner, values, Some(v.get(at..end).ok_or("short array")?))?;
            at = end;
        }
    }
    Ok(())
}

/// A binary `numeric` as an integer scaled by `scale` (half away from zero), `None` for NaN
/// and infinities.
fn numeric(v: &[u8], scale: i8) -> Result<Option<i128>, String> {
    let word = |i: usize| -> Result<u16, String> {
        Ok(u16::from_be_bytes(be(v
            .get(i * 2..i * 2 + 2)
            .ok_or("short numeric")?)?))
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i32;
    let sign = word(2)?;
    if sign == 0xC000 || sign == 0xD000 || sign == 0xF000 {
        return Ok(None); // NaN, +Infinity, -Infinity
    }
    let overflow = || format!("value does not fit decimal(38,{scale})");
    let mut acc: i128 = 0;
    let mut round_up = false;
    for i in 0..ndigits {
        let digit = word(4 + i)? as i128;
        // This base-10000 digit is worth 10^(4 * (weight - i)); scaled, 10^(4(w-i) + scale).
        let exponent = 4 * (weight - i as i32) + scale as i32;
        if exponent >= 0 {
            let factor = 10i128.checked_pow(exponent as u32).ok_or_else(overflow)?;
            acc = digit
                .checked_mul(factor)
                .and_then(|d| acc.checked_add(d))
                .ok_or_else(overflow)?;
        } else if exponent >= -4 {
            let divisor = 10i128.pow((-exponent) as u32);
            acc = acc.checked_add(digit / divisor).ok_or_else(overflow)?;
            round_up = (digit % divisor) * 2 >= divisor;
            break;
        } else {
            break;
        }
    }
    if round_up {
        acc = acc.checked_add(1).ok_or_else(overflow)?;
    }
    Ok(Some(if sign == 0x4000 { -acc } else { acc }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL's binary form of a numeric: base-10000 digits, weight, sign, scale.
    fn pg_numeric(digits: &[u16], weight: i16, negative: bool, dscale: u16) -> Vec<u8> {
        let mut out = Vec::new();
        for w in [
            digits.len() as u16,
            weight as u16,
            if negative { 0x4000 } else { 0 },
            dscale,
        ] {
            out.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics_scale_and_round() {
        // 12345.6789 = [1, 2345, 6789], weight 1
        let v = pg_numeric(&[1, 2345, 6789], 1, false, 4);
        assert_eq!(numeric(&v, 4).unwrap(), Some(123_456_789));
        assert_eq!(numeric(&v, 2).unwrap(), Some(1_234_568));
        assert_eq!(numeric(&v, 0).unwrap(), Some(12_346));
        let v = pg_numeric(&[7, 5000], 0, true, 4); // -7.5
        assert_eq!(numeric(&v, 1).unwrap(), Some(-75));
        let v = pg_numeric(&[5], -1, false, 4); // 0.0005
        assert_eq!(numeric(&v, 4).unwrap(), Some(5));
        assert_eq!(numeric(&v, 3).unwrap(), Some(1));
        let nan = [0u8, 0, 0, 0, 0xC0, 0, 0, 0];
        assert_eq!(numeric(&nan, 2).unwrap(), None);
        let huge = pg_numeric(&[1], 10, false, 0); // 10^40
        assert!(numeric(&huge, 0).unwrap_err().contains("does not fit"));
    }

    #[test]
    fn copy_stream_decodes_across_chunk_boundaries() {
        let kinds = vec![Kind::I32, Kind::Text, Kind::Array(Box::new(Kind::I64))];
        let schema = Arc::new(Schema::new(
            kinds
                .iter()
                .enumerate()
                .map(|(i, k)| k.field(&format!("c{i}")))
                .collect::<Vec<_>>(),
        ));
        let mut stream = b"PGCOPY\n\xff\r\n\0".to_vec();
        stream.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        for (id, text) in [(1i32, Some("héllo")), (2, None)] {
            stream.extend_from_slice(&3i16.to_be_bytes());
            stream.extend_from_slice(&4i32.to_be_bytes());
            stream.extend_from_slice(&id.to_be_bytes());
            match text {
                Some(t) => {
                    stream.extend_from_slice(&(t.len() as i32).to_be_bytes());
                    stream.extend_from_slice(t.as_bytes());
                }
                None => stream.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            // int8[] {10, NULL}
            let mut arr = Vec::new();
            for x in [1i32, 1, 20] {
                arr.extend_from_slice(&x.to_be_bytes());
            }
            arr.extend_from_slice(&2i32.to_be_bytes());
            arr.extend_from_slice(&1i32.to_be_bytes());
            arr.extend_from_slice(&8i32.to_be_bytes());
            arr.extend_from_slice(&10i64.to_be_bytes());
            arr.extend_from_slice(&(-1i32).to_be_bytes());
            stream.extend_from_slice(&(arr.len() as i32).to_be_bytes());
            stream.extend_from_slice(&arr);
        }
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        let mut decoder = Decoder::new(schema, kinds);
        for chunk in stream.chunks(7) {
            decoder.push(chunk).unwrap();
        }
        let batch = decoder.finish().unwrap().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let text = arrow::util::pretty::pretty_format_batches(&[batch])
            .unwrap()
            .to_string();
        assert!(text.contains("héllo") && text.contains("[10, ]"), "{text}");
    }
}
