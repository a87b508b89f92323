//! The functions whose output can be far larger than their input, bounded by the caller's
//! memory (the functions about the caller are in [`crate::engine::caller`]).
//!
//! DataFusion accounts the memory of operators that buffer (sorts, joins, aggregates) to
//! the memory pool, but not the arrays a function builds: `repeat('x', 536870912)` or
//! `range(1, 1e10)` allocate gigabytes from a few bytes of SQL. Here such functions are
//! wrapped: before running, the wrapper estimates what the call will build from its
//! arguments and reserves that from the user's pool (so it fails with the per-user limit's
//! name instead of growing the process); after running, the output's actual size is checked
//! the same way, which also bounds functions whose output is only a multiple of their input
//! (`concat`, `replace`) when they are nested to multiply it. The `||` operator is an
//! operator, not a function, so [`BoundedConcatPlanner`] wraps each string `||` in a
//! pass-through check of its output.

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalUnit, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DFSchema, ExprSchema, Result, ScalarValue};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Documentation, Expr, ExprSchemable, ExpressionPlacement, Operator,
    ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, StructFieldMapping,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::BinaryOperator;

/// How a function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`, `array_repeat(v, n)`: `n` copies of the value.
    Copies,
    /// `lpad(s, n)`, `rpad(s, n)`: up to 4 bytes for each of `n` characters.
    Pad,
    /// `array_resize(a, n)`: `n` elements.
    ArrayResize,
    /// `range(…)`, `generate_series(…)`: one element per step from start to stop.
    Series,
    /// Output bounded by a multiple of the input: checked after the call only.
    Proportional,
}

/// Functions wrapped, and how each grows.
const BOUNDED: &[(&str, Growth)] = &[
    ("repeat", Growth::Copies),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("array_repeat", Growth::Copies),
    ("array_resize", Growth::ArrayResize),
    ("range", Growth::Series),
    ("generate_series", Growth::Series),
    ("concat", Growth::Proportional),
    ("concat_ws", Growth::Proportional),
    ("replace", Growth::Proportional),
    ("regexp_replace", Growth::Proportional),
    ("overlay", Growth::Proportional),
    ("array_concat", Growth::Proportional),
    ("string_to_array", Growth::Proportional),
];

/// Replaces the session's amplifying functions with versions bounded by `pool`.
pub(crate) fn bound_functions(ctx: &SessionContext, pool: &Arc<dyn MemoryPool>) {
    let state = ctx.state();
    let functions = state.scalar_functions();
    for (name, growth) in BOUNDED {
        if let Some(udf) = functions.get(*name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
                inner: udf.inner().clone(),
                growth: *growth,
                pool: pool.clone(),
            }));
        }
    }
}

/// Plans string `a || b` as the usual operator with its output checked against the pool;
/// list operands are left to DataFusion's nested-function planner (`array_concat`, bounded
/// above, and `array_append`/`array_prepend`, which add one element).
#[derive(Debug)]
pub(crate) struct BoundedConcatPlanner {
    check: Arc<ScalarUDF>,
}

impl BoundedConcatPlanner {
    /// A planner whose `||` outputs are reserved from `pool`.
    pub(crate) fn new(pool: &Arc<dyn MemoryPool>) -> Self {
        Self {
            check: Arc::new(checked_size(pool)),
        }
    }
}

impl ExprPlanner for BoundedConcatPlanner {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let is_list = |e: &Expr| -> Result<bool> {
            Ok(matches!(
                e.get_type(schema)?,
                DataType::List(_)
                    | DataType::LargeList(_)
                    | DataType::FixedSizeList(..)
                    | DataType::ListView(_)
                    | DataType::LargeListView(_)
            ))
        };
        if expr.op != BinaryOperator::StringConcat || is_list(&expr.left)? || is_list(&expr.right)?
        {
            return Ok(PlannerResult::Original(expr));
        }
        let concat = Expr::BinaryExpr(BinaryExpr::new(
            Box::new(expr.left),
            Operator::StringConcat,
            Box::new(expr.right),
        ));
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(self.check.clone(), vec![concat]),
        )))
    }
}

/// The check [`BoundedConcatPlanner`] wraps `||` in, named `||`; a worker running another
/// replica's stage registers it to find it by that name.
pub(crate) fn checked_size(pool: &Arc<dyn MemoryPool>) -> ScalarUDF {
    ScalarUDF::new_from_impl(CheckedSize {
        signature: Signature::any(1, Volatility::Immutable),
        pool: pool.clone(),
    })
}

/// Returns its argument unchanged after reserving the argument's size from the pool. It
/// names itself after its argument, so `a || b` keeps its column name and plan text.
#[derive(Debug)]
struct CheckedSize {
    signature: Signature,
    pool: Arc<dyn MemoryPool>,
}

impl PartialEq for CheckedSize {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.pool, &other.pool)
    }
}

impl Eq for CheckedSize {}

impl Hash for CheckedSize {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "||".hash(state);
    }
}

impl ScalarUDFImpl for CheckedSize {
    fn name(&self) -> &str {
        "||"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(args.arg_fields[0].clone())
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        Ok(args[0].to_string())
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        Ok(args[0].schema_name().to_string())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let value = args.args.into_iter().next().expect("one argument");
        MemoryConsumer::new("||")
            .register(&self.pool)
            .try_grow(output_bytes(&value))?;
        Ok(value)
    }
}

/// A function whose allocations are checked against a memory pool.
#[derive(Debug)]
struct Bounded {
    inner: Arc<dyn ScalarUDFImpl>,
    growth: Growth,
    pool: Arc<dyn MemoryPool>,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner.dyn_eq(other.inner.as_ref() as &dyn Any) && Arc::ptr_eq(&self.pool, &other.pool)
    }
}

impl Eq for Bounded {}

impl Hash for Bounded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.name().hash(state);
        self.growth.hash(state);
    }
}

impl Bounded {
    /// Reserves `bytes` from the pool (and so fails with the pool's limit named).
    fn reserve(&self, bytes: usize) -> Result<()> {
        let reservation =
            MemoryConsumer::new(format!("{}()", self.inner.name())).register(&self.pool);
        reservation.try_grow(bytes)
    }
}

/// Integer values of an argument, one per row (a scalar repeated).
fn ints(arg: &ColumnarValue, rows: usize) -> Result<Vec<Option<i64>>> {
    let array = arg.to_array(rows)?;
    let array = match array.data_type() {
        DataType::Date32 => {
            // Days, as nanoseconds, to compare with interval steps.
            let days = cast(&array, &DataType::Int64)?;
            return Ok(days
                .as_primitive::<Int64Type>()
                .iter()
                .map(|d| d.map(|d| d.saturating_mul(86_400_000_000_000)))
                .collect());
        }
        DataType::Timestamp(unit, _) => {
            let factor = match unit {
                TimeUnit::Second => 1_000_000_000,
                TimeUnit::Millisecond => 1_000_000,
                TimeUnit::Microsecond => 1_000,
                TimeUnit::Nanosecond => 1,
            };
            let raw = cast(&array, &DataType::Int64)?;
            return Ok(raw
                .as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.map(|v| v.saturating_mul(factor)))
                .collect());
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let intervals =
                array.as_primitive::<datafusion::arrow::datatypes::IntervalMonthDayNanoType>();
            return Ok(intervals
                .iter()
                .map(|i| {
                    i.map(|i| {
                        i64::from(i.months)
                            .saturating_mul(28 * 86_400_000_000_000)
                            .saturating_add(i64::from(i.days).saturating_mul(86_400_000_000_000))
                            .saturating_add(i.nanoseconds)
                    })
                })
                .collect());
        }
        t if t.is_integer() || t.is_floating() || t.is_null() => cast(&array, &DataType::Int64)?,
        _ => return Ok(vec![None; rows]),
    };
    Ok(array.as_primitive::<Int64Type>().iter().collect())
}

/// Byte length of each row's value of a string argument (8 for other types).
fn widths(arg: &ColumnarValue, rows: usize) -> Result<Vec<i64>> {
    let array: ArrayRef = arg.to_array(rows)?;
    match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary => {
            let lengths = cast(&length(&array)?, &DataType::Int64)?;
            Ok(lengths
                .as_primitive::<Int64Type>()
                .iter()
                .map(|l| l.unwrap_or(0))
                .collect())
        }
        DataType::Utf8View | DataType::BinaryView => {
            let as_utf8 = cast(&array, &DataType::LargeBinary)?;
            widths(&ColumnarValue::Array(as_utf8), rows)
        }
        _ => Ok(vec![
            (array.get_array_memory_size() / rows.max(1)).max(8)
                as i64;
            rows
        ]),
    }
}

/// The bytes a call will build, estimated from its arguments.
fn estimate(growth: Growth, args: &[ColumnarValue], rows: usize) -> Result<u64> {
    let rows = rows.max(1);
    let total = |per_row: Vec<u64>| per_row.into_iter().fold(0u64, u64::saturating_add);
    // `n` items of `bytes` each, per row.
    let counted = |n: &ColumnarValue, bytes: u64| -> Result<u64> {
        Ok(total(
            ints(n, rows)?
                .into_iter()
                .map(|n| (n.unwrap_or(0).max(0) as u64).saturating_mul(bytes))
                .collect(),
        ))
    };
    Ok(match (growth, args) {
        (Growth::Copies, [v, n, ..]) => {
            let (w, n) = (widths(v, rows)?, ints(n, rows)?);
            total(
                w.iter()
                    .zip(&n)
                    .map(|(w, n)| (*w as u64).saturating_mul(n.unwrap_or(0).max(0) as u64))
                    .collect(),
            )
        }
        (Growth::Pad, [_, n, ..]) => counted(n, 4)?,
        (Growth::ArrayResize, [_, n, ..]) => counted(n, 8)?,
        (Growth::Series, [stop]) => total(
            ints(stop, rows)?
                .into_iter()
                .map(|s| s.unwrap_or(0).unsigned_abs().saturating_mul(8))
                .collect(),
        ),
        (Growth::Series, [start, stop, rest @ ..]) => {
            let (start, stop) = (ints(start, rows)?, ints(stop, rows)?);
            let step = match rest.first() {
                Some(step) => ints(step, rows)?,
                None => vec![Some(1); rows],
            };
            let per_step = |i: usize| match (args[0].data_type(), rest.is_empty()) {
                // Dates step a day by default.
                (DataType::Date32, true) => 86_400_000_000_000u64,
                _ => step[i].unwrap_or(1).unsigned_abs().max(1),
            };
            total(
                (0..rows)
                    .map(|i| {
                        let span = stop[i].unwrap_or(0).abs_diff(start[i].unwrap_or(0));
                        (span / per_step(i)).saturating_add(1).saturating_mul(8)
                    })
                    .collect(),
            )
        }
        _ => 0,
    })
}

/// Bytes an output holds.
fn output_bytes(value: &ColumnarValue) -> usize {
    match value {
        ColumnarValue::Array(a) => a.get_array_memory_size(),
        ColumnarValue::Scalar(s) => s.size(),
    }
}

#[warn(clippy::missing_trait_methods)]
impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        #[expect(deprecated)]
        self.inner.display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn with_updated_config(&self, _config: &ConfigOptions) -> Option<ScalarUDF> {
        None
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        #[expect(deprecated)]
        self.inner.is_nullable(args, schema)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let planned = estimate(self.growth, &args.args, args.number_rows)?;
        self.reserve(usize::try_from(planned).unwrap_or(usize::MAX))?;
        let output = self.inner.invoke_with_args(args)?;
        self.reserve(output_bytes(&output))?;
        Ok(output)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<PreimageResult> {
        self.inner.preimage(args, lit_expr, info)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.conditional_arguments(args)
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.inner.propagate_constraints(interval, inputs)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<StructFieldMapping> {
        self.inner.struct_field_mapping(literal_args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.inner.placement(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    async fn run(ctx: &SessionContext, sql: &str) -> Result<usize> {
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    #[tokio::test]
    async fn amplifying_functions_fail_before_they_allocate() {
        let ctx = SessionContext::new();
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1024 * 1024));
        bound_functions(&ctx, &pool);
        assert_eq!(run(&ctx, "SELECT repeat('x', 1000)").await.unwrap(), 1);
        for sql in [
            "SELECT length(repeat('x', 536870912))",
            "SELECT lpad('x', 100000000)",
            "SELECT cardinality(range(1, 1000000000))",
            "SELECT cardinality(range(DATE '1970-01-01', DATE '9999-12-31', INTERVAL '1 second'))",
            "SELECT cardinality(array_repeat('abc', 100000000))",
        ] {
            let err = run(&ctx, sql).await.unwrap_err().to_string();
            assert!(err.contains("Failed to allocate"), "{sql}: {err}");
        }
        // Small calls on many rows add up per batch.
        assert!(
            run(
                &ctx,
                "SELECT repeat('x', 1000) FROM generate_series(1, 100)"
            )
            .await
            .is_ok()
        );
        // Aliases and functions the wrapper does not know stay as they were.
        assert_eq!(run(&ctx, "SELECT upper('a'), sum(1)").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn string_concat_operator_is_bounded_and_keeps_its_meaning() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(8 * 1024 * 1024));
        let mut state = datafusion::execution::SessionStateBuilder::new().with_default_features();
        state
            .expr_planners()
            .get_or_insert_default()
            .push(Arc::new(BoundedConcatPlanner::new(&pool)));
        let ctx = SessionContext::new_with_state(state.build());
        bound_functions(&ctx, &pool);

        let batches = ctx
            .sql("SELECT 'a' || 'b' AS ab, NULL || 'x' AS n, 'v' || 1 AS v, [1] || [2] AS l, 'q' || s FROM (VALUES ('r')) t(s)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let shown = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(
            shown.contains("| ab | n | v  | l      | Utf8(\"q\") || t.s |"),
            "{shown}"
        );
        assert!(shown.contains("| ab |   | v1 | [1, 2] | qr"), "{shown}");

        let doubling = "WITH s0 AS (SELECT repeat('x', 1000000) AS s), \
             s1 AS (SELECT s || s AS s FROM s0), s2 AS (SELECT s || s AS s FROM s1), \
             s3 AS (SELECT s || s AS s FROM s2), s4 AS (SELECT s || s AS s FROM s3), \
             s5 AS (SELECT s || s AS s FROM s4) SELECT length(s) FROM s5";
        let err = run(&ctx, doubling).await.unwrap_err().to_string();
        assert!(err.contains("Failed to allocate"), "{err}");
    }
}
