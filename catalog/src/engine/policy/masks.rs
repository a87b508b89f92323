//! Tag masks: how a masking policy's [`Mask`] shows a column, as an expression of what the
//! grants already show of it (so a tag mask never reveals what a grant's mask hid), keeping
//! the column's type. A mask that does not fit the column's type shows NULL: closed, never
//! open.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Builder, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, Result, ScalarValue, exec_err};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::state::governance::Mask;

/// The name a mask's template gives the value it masks.
const VALUE: &str = "__quiver_masked_value";

/// The expression showing `value` (of `data_type`) through `mask`.
pub(crate) fn mask_expr(
    mask: &Mask,
    value: Expr,
    data_type: &DataType,
    state: &SessionState,
) -> Result<Expr, String> {
    let text = matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    );
    let integer = data_type.is_integer();
    let null = || lit(ScalarValue::try_from(data_type).unwrap_or(ScalarValue::Null));
    let v = format!("\"{VALUE}\"");
    let template = match mask {
        Mask::Null => return Ok(null()),
        Mask::Redact if text => "'****'".to_string(),
        Mask::Partial { first, last } if text => {
            let keep = first + last;
            format!(
                "CASE WHEN character_length({v}) <= {keep} THEN repeat('*', CAST(character_length({v}) AS INT))
                 ELSE concat(left({v}, {first}), repeat('*', CAST(character_length({v}) - {keep} AS INT)), right({v}, {last})) END"
            )
        }
        Mask::Hash if text || integer => format!("{MASK_HASH}({v})"),
        Mask::Round(digits) if data_type.is_numeric() => {
            format!("round(CAST({v} AS DOUBLE), {digits})")
        }
        Mask::TruncateDate(unit) if data_type.is_temporal() => {
            format!("date_trunc('{unit}', {v})")
        }
        Mask::Sql(sql) => sql.replace("{col}", &v),
        _ => return Ok(null()),
    };
    let schema = Schema::new(vec![Field::new(VALUE, data_type.clone(), true)]);
    let df = DFSchema::try_from(schema).map_err(|e| e.to_string())?;
    let expr = state
        .create_logical_expr(&template, &df)
        .map_err(|e| e.strip_backtrace())?;
    super::no_subqueries(&expr)?;
    let substituted = expr
        .transform(|e| match e {
            Expr::Column(Column { ref name, .. }) if name == VALUE => {
                Ok(Transformed::yes(value.clone()))
            }
            Expr::Column(c) => exec_err!("a mask may use only {{col}}, not `{}`", c.name),
            e => Ok(Transformed::no(e)),
        })
        .map_err(|e| e.strip_backtrace())?
        .data;
    Ok(substituted)
}

/// The keyed hash's SQL name (`hash` masks).
pub(crate) const MASK_HASH: &str = "quiver_mask_hash";

/// `quiver_mask_hash(v)`: HMAC-SHA256 of a text or integer under the server's mask key; text
/// becomes 32 hex digits, integers another integer. Equal values hash alike.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct MaskHash {
    key: Vec<u8>,
    signature: Signature,
}

impl MaskHash {
    /// The function, keyed with `key`.
    pub(crate) fn udf(key: &[u8]) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            key: key.to_vec(),
            signature: Signature::any(1, Volatility::Immutable),
        })
    }

    fn digest(&self, bytes: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }
}

impl ScalarUDFImpl for MaskHash {
    fn name(&self) -> &str {
        MASK_HASH
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match &args[0] {
            t if t.is_integer() => Ok(DataType::Int64),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
                Ok(DataType::Utf8)
            }
            other => exec_err!("{MASK_HASH} hashes text or integers, not {other}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let input = args.args[0].to_array(rows)?;
        let out: ArrayRef = if input.data_type().is_integer() {
            let numbers = cast(&input, &DataType::Int64)?;
            let numbers = numbers.as_primitive::<Int64Type>();
            let mut out = Int64Builder::with_capacity(rows);
            for value in numbers.iter() {
                out.append_option(value.map(|n| {
                    let d = self.digest(&n.to_le_bytes());
                    i64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
                }));
            }
            Arc::new(out.finish())
        } else {
            let text = cast(&input, &DataType::Utf8)?;
            let text = text.as_string::<i32>();
            let mut out = StringBuilder::with_capacity(rows, rows * 32);
            for value in text.iter() {
                out.append_option(value.map(|s| {
                    self.digest(s.as_bytes())[..16]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                }));
            }
            Arc::new(out.finish())
        };
        Ok(ColumnarValue::Array(out))
    }
}
