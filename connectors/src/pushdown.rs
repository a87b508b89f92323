//! Filters a remote source runs for us, written in its SQL (the groundwork of `mode: remote`).
//!
//! Only filters whose meaning is the same in DataFusion and in the source are translated:
//! comparisons, `AND`/`OR`/`NOT`, `IS [NOT] NULL`, `IN` lists and `BETWEEN` over columns
//! and literals of numbers, booleans, dates and strings — but no ordering of strings (the
//! source's collation may sort them differently) and no functions (their semantics differ
//! between engines). A filter handed to the source is still applied above it, so a source
//! that keeps a row too many changes nothing. Which filters may reach a source at all — a
//! user's predicate must not run on rows the policy hides — is the policy barrier's rule;
//! this module only says which of those the source can run.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Operator};
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::{BigQueryDialect, Dialect, PostgreSqlDialect};

/// The SQL a remote source speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceDialect {
    /// PostgreSQL.
    Postgres,
    /// GoogleSQL (BigQuery).
    BigQuery,
}

impl SourceDialect {
    fn dialect(self) -> &'static dyn Dialect {
        match self {
            Self::Postgres => &PostgreSqlDialect {},
            Self::BigQuery => &BigQueryDialect {},
        }
    }
}

/// `filter` in the source's SQL, when the source evaluates it exactly as DataFusion does.
pub fn to_sql(dialect: SourceDialect, schema: &DFSchema, filter: &Expr) -> Option<String> {
    if !translatable(schema, filter) {
        return None;
    }
    Unparser::new(dialect.dialect())
        .expr_to_sql(filter)
        .ok()
        .map(|sql| sql.to_string())
}

/// Whether the source evaluates `expr` exactly as DataFusion does (see the module docs).
fn translatable(schema: &DFSchema, expr: &Expr) -> bool {
    let is_text = |e: &Expr| {
        e.get_type(schema)
            .map(|t| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View))
            .unwrap_or(true)
    };
    match expr {
        Expr::Column(c) => schema.has_column(c),
        Expr::Literal(value, _) => plain_literal(value),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let ordering = matches!(
                op,
                Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
            );
            let allowed = matches!(
                op,
                Operator::And
                    | Operator::Or
                    | Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
            );
            allowed
                && !(ordering && (is_text(left) || is_text(right)))
                && translatable(schema, left)
                && translatable(schema, right)
        }
        Expr::Not(e) | Expr::IsNull(e) | Expr::IsNotNull(e) => translatable(schema, e),
        Expr::InList(list) => {
            translatable(schema, &list.expr) && list.list.iter().all(|e| translatable(schema, e))
        }
        Expr::Between(b) => {
            !is_text(&b.expr)
                && translatable(schema, &b.expr)
                && translatable(schema, &b.low)
                && translatable(schema, &b.high)
        }
        _ => false,
    }
}

/// Literals both engines read alike. Timestamps are left out: their literal syntax and time
/// zone rules differ.
fn plain_literal(value: &ScalarValue) -> bool {
    matches!(
        value,
        ScalarValue::Boolean(Some(_))
            | ScalarValue::Int8(Some(_))
            | ScalarValue::Int16(Some(_))
            | ScalarValue::Int32(Some(_))
            | ScalarValue::Int64(Some(_))
            | ScalarValue::UInt8(Some(_))
            | ScalarValue::UInt16(Some(_))
            | ScalarValue::UInt32(Some(_))
            | ScalarValue::Float64(Some(_))
            | ScalarValue::Decimal128(Some(_), _, _)
            | ScalarValue::Utf8(Some(_))
            | ScalarValue::Utf8View(Some(_))
            | ScalarValue::Date32(Some(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::prelude::{col, lit};

    fn schema() -> DFSchema {
        DFSchema::try_from(Schema::new(vec![
            Field::new("region", DataType::Utf8, true),
            Field::new("amount", DataType::Int64, true),
            Field::new("note", DataType::Utf8, true),
        ]))
        .unwrap()
    }

    #[test]
    fn comparisons_and_logic_are_written_in_each_dialect() {
        let filter = col("region")
            .eq(lit("EU"))
            .and(col("amount").gt(lit(10i64)).or(col("note").is_null()));
        assert_eq!(
            to_sql(SourceDialect::Postgres, &schema(), &filter).unwrap(),
            r#"(("region" = 'EU') AND (("amount" > 10) OR "note" IS NULL))"#
        );
        assert_eq!(
            to_sql(SourceDialect::BigQuery, &schema(), &filter).unwrap(),
            "((`region` = 'EU') AND ((`amount` > 10) OR `note` IS NULL))"
        );
        // A quote inside a string literal stays inside it.
        assert_eq!(
            to_sql(
                SourceDialect::Postgres,
                &schema(),
                &col("note").eq(lit("it's"))
            )
            .unwrap(),
            r#"("note" = 'it''s')"#
        );
    }

    #[test]
    fn what_the_source_might_evaluate_differently_stays_here() {
        let upper = datafusion::functions::string::upper().call(vec![col("note")]);
        for filter in [
            col("note").gt(lit("m")),                                // collation
            upper.eq(lit("X")),                                      // a function
            col("amount").gt(lit(1i64)).and(col("x").eq(lit(1i64))), // not a column of the table
            (col("amount") / lit(0i64)).gt(lit(1i64)),               // arithmetic
        ] {
            assert_eq!(
                to_sql(SourceDialect::Postgres, &schema(), &filter),
                None,
                "{filter}"
            );
        }
    }
}
