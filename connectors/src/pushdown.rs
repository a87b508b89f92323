//! Filters a remote source runs for us, written in its SQL (`mode: remote`).
//!
//! Only filters whose meaning is the same in DataFusion and in the source are sent:
//! comparisons, `AND`/`OR`/`NOT`, `IS [NOT] NULL`, `IN` lists and `BETWEEN` over columns
//! and literals of numbers, booleans, dates and strings — but no ordering of strings (the
//! source's collation may sort them differently) and no functions (their semantics differ
//! between engines). A filter handed to the source is still applied above it, so a source
//! that keeps a row too many changes nothing. Which filters may reach a source at all — a
//! user's predicate must not run on rows the policy hides — is the policy barrier's rule;
//! this module only says which of those the source can run, and writes them.
//!
//! Values never become SQL text by a general-purpose printer. BigQuery gets them as typed
//! query parameters (`@quiver_p0`), so no value is ever parsed as SQL there. PostgreSQL's
//! `COPY` takes no parameters, so its literals are written by [`pg_string`], which quotes as
//! the server's own `quote_literal` does (an `E'…'` string when there is a backslash), and
//! means the same whatever `standard_conforming_strings` says. A value neither can carry
//! (text with a NUL byte, a float that is not finite, a date outside years 1–9999) keeps
//! its filter here, evaluated above the read.

use std::fmt::Write as _;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Operator};
use quiver_catalog::RemoteQuery;

/// The SQL a remote source speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceDialect {
    /// PostgreSQL: literals written inline, quoted exactly.
    Postgres,
    /// GoogleSQL (BigQuery): literals sent as named query parameters.
    BigQuery,
}

/// One remote read in a source's SQL: the text and, for BigQuery, the values it names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SourceSql {
    /// The statement.
    pub text: String,
    /// `(name, value)` of each `@name` in the text (always empty for PostgreSQL).
    pub params: Vec<(String, ScalarValue)>,
}

/// Whether the source can run `filter` exactly as DataFusion would (`schema` is the
/// table's).
pub(crate) fn can_run(dialect: SourceDialect, schema: &DFSchema, filter: &Expr) -> bool {
    translatable(schema, filter) && Writer::new(dialect).expr(filter).is_some()
}

/// `SELECT select FROM source AS quiver_source WHERE … LIMIT …` for `query`: `select` are
/// the columns as the source selects them, `source` a quoted table or a query in
/// parentheses. Filters the source cannot run are left out (they apply above the read).
pub(crate) fn select(
    dialect: SourceDialect,
    query: &RemoteQuery,
    select: &[String],
    source: &str,
) -> SourceSql {
    let mut writer = Writer::new(dialect);
    let mut text = format!(
        "SELECT {} FROM {source} AS quiver_source",
        select.join(", ")
    );
    let mut filters = Vec::new();
    for filter in &query.filters {
        let mark = writer.params.len();
        match writer.expr(filter) {
            Some(sql) => filters.push(sql),
            None => writer.params.truncate(mark),
        }
    }
    if !filters.is_empty() {
        let _ = write!(text, " WHERE {}", filters.join(" AND "));
    }
    if let Some(limit) = query.limit {
        let _ = write!(text, " LIMIT {limit}");
    }
    SourceSql {
        text,
        params: writer.params,
    }
}

/// Writes filters in one dialect, collecting BigQuery's parameters as it goes.
struct Writer {
    dialect: SourceDialect,
    params: Vec<(String, ScalarValue)>,
}

impl Writer {
    fn new(dialect: SourceDialect) -> Self {
        Self {
            dialect,
            params: Vec::new(),
        }
    }

    /// `expr` in the source's SQL, fully parenthesised; `None` if something in it cannot
    /// be written safely.
    fn expr(&mut self, expr: &Expr) -> Option<String> {
        Some(match expr {
            Expr::Column(c) => self.ident(&c.name)?,
            Expr::Literal(value, _) => self.literal(value)?,
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let op = match op {
                    Operator::And => "AND",
                    Operator::Or => "OR",
                    Operator::Eq => "=",
                    Operator::NotEq => "<>",
                    Operator::Lt => "<",
                    Operator::LtEq => "<=",
                    Operator::Gt => ">",
                    Operator::GtEq => ">=",
                    _ => return None,
                };
                format!("({} {op} {})", self.expr(left)?, self.expr(right)?)
            }
            Expr::Not(e) => format!("(NOT {})", self.expr(e)?),
            Expr::IsNull(e) => format!("({} IS NULL)", self.expr(e)?),
            Expr::IsNotNull(e) => format!("({} IS NOT NULL)", self.expr(e)?),
            Expr::InList(list) if !list.list.is_empty() => {
                let value = self.expr(&list.expr)?;
                let items = list
                    .list
                    .iter()
                    .map(|e| self.expr(e))
                    .collect::<Option<Vec<_>>>()?;
                let not = if list.negated { "NOT " } else { "" };
                format!("({value} {not}IN ({}))", items.join(", "))
            }
            Expr::Between(b) => {
                let not = if b.negated { "NOT " } else { "" };
                format!(
                    "({} {not}BETWEEN {} AND {})",
                    self.expr(&b.expr)?,
                    self.expr(&b.low)?,
                    self.expr(&b.high)?
                )
            }
            _ => return None,
        })
    }

    /// A column name, quoted for the dialect. Names with control characters are not sent.
    fn ident(&self, name: &str) -> Option<String> {
        if name.chars().any(char::is_control) {
            return None;
        }
        Some(match self.dialect {
            SourceDialect::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
            SourceDialect::BigQuery => {
                format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
            }
        })
    }

    fn literal(&mut self, value: &ScalarValue) -> Option<String> {
        let value = sendable(value)?;
        match self.dialect {
            SourceDialect::BigQuery => {
                let name = format!("quiver_p{}", self.params.len());
                self.params.push((name.clone(), value));
                Some(format!("@{name}"))
            }
            SourceDialect::Postgres => Some(match &value {
                ScalarValue::Boolean(Some(b)) => if *b { "TRUE" } else { "FALSE" }.to_string(),
                ScalarValue::Utf8(Some(s)) => pg_string(s)?,
                ScalarValue::Float64(Some(_)) => {
                    format!("CAST('{}' AS double precision)", value_text(&value))
                }
                ScalarValue::Date32(Some(_)) => format!("DATE '{}'", value_text(&value)),
                // Integers and decimals: digits, a sign and a point, in parentheses so a
                // minus never meets an operator.
                _ => format!("({})", value_text(&value)),
            }),
        }
    }
}

/// A string as a PostgreSQL literal, as the server's `quote_literal` writes it: quotes
/// doubled, and with a backslash an `E'…'` string with backslashes doubled. Both forms
/// mean the same whatever `standard_conforming_strings` is. PostgreSQL text cannot hold a
/// NUL byte, so such a value is not sent.
pub(crate) fn pg_string(text: &str) -> Option<String> {
    if text.contains('\0') {
        return None;
    }
    let quoted = text.replace('\'', "''");
    Some(if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    })
}

/// A value [`sendable`] accepted, as text both sources read back exactly: digits with a
/// point for decimals, the shortest round-trip form for floats, ISO dates.
pub(crate) fn value_text(value: &ScalarValue) -> String {
    use datafusion::arrow::datatypes::{Decimal128Type, DecimalType};
    match value {
        ScalarValue::Utf8(Some(s)) => s.clone(),
        ScalarValue::Float64(Some(f)) => format!("{f:?}"),
        ScalarValue::Decimal128(Some(v), p, s) => Decimal128Type::format_decimal(*v, *p, *s),
        other => other.to_string(),
    }
}

/// `value` normalised to the types we send (text as `Utf8`, integers as `Int64`), or `None`
/// when a source would read it differently or not at all.
fn sendable(value: &ScalarValue) -> Option<ScalarValue> {
    Some(match value {
        ScalarValue::Boolean(Some(_)) | ScalarValue::Int64(Some(_)) => value.clone(),
        ScalarValue::Int8(Some(v)) => ScalarValue::Int64(Some((*v).into())),
        ScalarValue::Int16(Some(v)) => ScalarValue::Int64(Some((*v).into())),
        ScalarValue::Int32(Some(v)) => ScalarValue::Int64(Some((*v).into())),
        ScalarValue::UInt8(Some(v)) => ScalarValue::Int64(Some((*v).into())),
        ScalarValue::UInt16(Some(v)) => ScalarValue::Int64(Some((*v).into())),
        ScalarValue::UInt32(Some(v)) => ScalarValue::Int64(Some((*v).into())),
        ScalarValue::Float64(Some(f)) if f.is_finite() => value.clone(),
        ScalarValue::Decimal128(Some(_), _, scale) if *scale >= 0 => value.clone(),
        ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) if !s.contains('\0') => {
            ScalarValue::Utf8(Some(s.clone()))
        }
        // Years 1–9999: both sources write and read those alike.
        ScalarValue::Date32(Some(days)) if (-719_162..=2_932_896).contains(days) => value.clone(),
        _ => return None,
    })
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
        Expr::Literal(value, _) => sendable(value).is_some(),
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

    fn query(filters: Vec<Expr>, limit: Option<usize>) -> RemoteQuery {
        RemoteQuery {
            columns: vec!["region".into()],
            filters,
            limit,
        }
    }

    fn written(dialect: SourceDialect, filter: Expr) -> SourceSql {
        assert!(can_run(dialect, &schema(), &filter), "{filter}");
        let select = [String::from("c")];
        select_sql(dialect, &query(vec![filter], None), &select)
    }

    fn select_sql(dialect: SourceDialect, query: &RemoteQuery, columns: &[String]) -> SourceSql {
        select(dialect, query, columns, "t")
    }

    #[test]
    fn a_query_is_written_with_its_filters_and_limit() {
        let filter = col("region")
            .eq(lit("EU"))
            .and(col("amount").gt(lit(10i64)).or(col("note").is_null()));
        let q = query(vec![filter, col("amount").lt(lit(-3i32))], Some(5));
        let pg = select(
            SourceDialect::Postgres,
            &q,
            &["\"region\"".into()],
            "public.t",
        );
        assert_eq!(
            pg.text,
            r#"SELECT "region" FROM public.t AS quiver_source WHERE (("region" = 'EU') AND (("amount" > (10)) OR ("note" IS NULL))) AND ("amount" < (-3)) LIMIT 5"#
        );
        assert!(pg.params.is_empty());
        let bq = select(SourceDialect::BigQuery, &q, &["`region`".into()], "`p.d.t`");
        assert_eq!(
            bq.text,
            "SELECT `region` FROM `p.d.t` AS quiver_source WHERE ((`region` = @quiver_p0) AND ((`amount` > @quiver_p1) OR (`note` IS NULL))) AND (`amount` < @quiver_p2) LIMIT 5"
        );
        assert_eq!(
            bq.params,
            vec![
                ("quiver_p0".into(), ScalarValue::Utf8(Some("EU".into()))),
                ("quiver_p1".into(), ScalarValue::Int64(Some(10))),
                ("quiver_p2".into(), ScalarValue::Int64(Some(-3))),
            ]
        );
        let bare = select(
            SourceDialect::Postgres,
            &query(vec![], None),
            &["1".into()],
            "t",
        );
        assert_eq!(bare.text, "SELECT 1 FROM t AS quiver_source");
    }

    #[test]
    fn strings_stay_strings_in_postgres() {
        for (value, sql) in [
            ("it's", "'it''s'"),
            ("a''b", "'a''''b'"),
            (r"\'", r"E'\\'''"),
            (r"x\''y", r"E'x\\''''y'"),
            ("$$|$$", "'$$|$$'"),
            ("-- x /* y", "'-- x /* y'"),
            ("naïve ☃ 𝄞", "'naïve ☃ 𝄞'"),
        ] {
            assert_eq!(pg_string(value).as_deref(), Some(sql), "{value}");
            let w = written(SourceDialect::Postgres, col("note").eq(lit(value)));
            assert_eq!(
                w.text,
                format!("SELECT c FROM t AS quiver_source WHERE (\"note\" = {sql})")
            );
        }
    }

    #[test]
    fn values_go_to_bigquery_as_parameters_only() {
        let attack = r"\\'' OR PWNED_MARKER = 1)) #";
        let w = written(SourceDialect::BigQuery, col("note").eq(lit(attack)));
        assert_eq!(
            w.text,
            "SELECT c FROM t AS quiver_source WHERE (`note` = @quiver_p0)"
        );
        assert_eq!(
            w.params,
            vec![("quiver_p0".into(), ScalarValue::Utf8(Some(attack.into())))]
        );
    }

    #[test]
    fn identifiers_are_quoted_for_each_dialect() {
        let odd = DFSchema::try_from(Schema::new(vec![Field::new(
            "we\"ird`\\",
            DataType::Int64,
            true,
        )]))
        .unwrap();
        let filter = col(datafusion::common::Column::from_name("we\"ird`\\")).is_null();
        assert!(can_run(SourceDialect::Postgres, &odd, &filter));
        let q = query(vec![filter], None);
        assert_eq!(
            select_sql(SourceDialect::Postgres, &q, &[]).text,
            r#"SELECT  FROM t AS quiver_source WHERE ("we""ird`\" IS NULL)"#
        );
        assert_eq!(
            select_sql(SourceDialect::BigQuery, &q, &[]).text,
            r#"SELECT  FROM t AS quiver_source WHERE (`we"ird\`\\` IS NULL)"#
        );
    }

    #[test]
    fn what_the_source_might_evaluate_differently_stays_here() {
        let upper = datafusion::functions::string::upper().call(vec![col("note")]);
        for filter in [
            col("note").gt(lit("m")),                                   // collation
            upper.eq(lit("X")),                                         // a function
            col("amount").gt(lit(1i64)).and(col("x").eq(lit(1i64))),    // not a column of the table
            (col("amount") / lit(0i64)).gt(lit(1i64)),                  // arithmetic
            col("note").eq(lit("a\0b")),                                // NUL: not text there
            col("amount").eq(lit(f64::NAN)),                            // not finite
            col("amount").eq(lit(ScalarValue::Date32(Some(-800_000)))), // year 0 and before
        ] {
            for dialect in [SourceDialect::Postgres, SourceDialect::BigQuery] {
                assert!(!can_run(dialect, &schema(), &filter), "{filter}");
            }
        }
    }

    #[test]
    fn numbers_and_dates_are_written_exactly() {
        let cases = [
            (lit(0.1f64), "CAST('0.1' AS double precision)"),
            (
                lit(ScalarValue::Decimal128(Some(-12345), 10, 2)),
                "(-123.45)",
            ),
            (lit(ScalarValue::Date32(Some(19_000))), "DATE '2022-01-08'"),
            (lit(true), "TRUE"),
        ];
        assert_eq!(
            value_text(&ScalarValue::Decimal128(Some(5), 10, 3)),
            "0.005"
        );
        for (value, sql) in cases {
            let w = written(SourceDialect::Postgres, col("amount").eq(value));
            assert_eq!(
                w.text,
                format!("SELECT c FROM t AS quiver_source WHERE (\"amount\" = {sql})")
            );
        }
    }
}
