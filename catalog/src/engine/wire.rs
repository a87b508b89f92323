//! What leaves the server: Arrow without view types.
//!
//! Inside DataFusion strings and binaries are read as `Utf8View` / `BinaryView`, which scans,
//! filters and groups faster. Many clients cannot read views (the JDBC driver before
//! arrow-java 19, ODBC bridges, older pyarrow), so every schema and batch a client or a
//! landed file sees is the plain equivalent: `Utf8` and `Binary`, inside lists, structs and
//! maps too.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder};

/// `ty` with every view type replaced by its plain equivalent.
pub fn plain_type(ty: &DataType) -> DataType {
    match ty {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) => DataType::List(plain_field(f)),
        DataType::LargeList(f) => DataType::LargeList(plain_field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(plain_field(f), *n),
        DataType::ListView(f) => DataType::List(plain_field(f)),
        DataType::LargeListView(f) => DataType::LargeList(plain_field(f)),
        DataType::Struct(fields) => DataType::Struct(plain_fields(fields)),
        DataType::Map(f, sorted) => DataType::Map(plain_field(f), *sorted),
        DataType::Dictionary(k, v) => DataType::Dictionary(k.clone(), Box::new(plain_type(v))),
        other => other.clone(),
    }
}

fn plain_field(field: &FieldRef) -> FieldRef {
    let ty = plain_type(field.data_type());
    if &ty == field.data_type() {
        field.clone()
    } else {
        Arc::new(field.as_ref().clone().with_data_type(ty))
    }
}

fn plain_fields(fields: &Fields) -> Fields {
    fields.iter().map(plain_field).collect()
}

/// `schema` as clients see it (metadata kept).
pub fn plain_schema(schema: &SchemaRef) -> SchemaRef {
    let fields = plain_fields(schema.fields());
    if &fields == schema.fields() {
        return schema.clone();
    }
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` cast to `schema` (its [`plain_schema`]); unchanged when it already is.
pub fn plain_batch(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema_ref().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| cast(column, field.data_type()))
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// `plan` with a projection that casts view-typed columns to their plain types, so its
/// result (and the schema a client is told) has none; `plan` itself when it has none. The
/// cast runs inside the plan, in parallel with the rest of it.
///
/// An ordered result (`ORDER BY`, with its `LIMIT` and a projection of columns above it) is
/// cast below its sort: DataFusion 54 spreads a projection above a sort over partitions
/// again, and the rows would come out of order.
pub fn plain_plan(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    let columns_only = |p: &datafusion::logical_expr::Projection| {
        p.expr.iter().all(|e| matches!(e, Expr::Column(_)))
    };
    let ordered = match &plan {
        LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => true,
        LogicalPlan::Projection(p) => {
            columns_only(p)
                && matches!(
                    p.input.as_ref(),
                    LogicalPlan::Sort(_) | LogicalPlan::Limit(_)
                )
        }
        _ => false,
    };
    if !ordered {
        return cast_on_top(plan);
    }
    let inputs = plan
        .inputs()
        .into_iter()
        .map(|input| plain_plan(input.clone()))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    cast_on_top(plan.with_new_exprs(plan.expressions(), inputs)?)
}

/// `plan` under a projection casting its view-typed columns (none: `plan`).
fn cast_on_top(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    let schema = plan.schema().clone();
    let needs_cast = |f: &Field| &plain_type(f.data_type()) != f.data_type();
    if !schema.fields().iter().any(|f| needs_cast(f)) {
        return Ok(plan);
    }
    let columns: Vec<Expr> = schema
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column((qualifier, field).into());
            if needs_cast(field) {
                column
                    .cast_to(&plain_type(field.data_type()), &schema)
                    .map(|e| e.alias_qualified(qualifier.cloned(), field.name()))
            } else {
                Ok(column)
            }
        })
        .collect::<datafusion::error::Result<_>>()?;
    LogicalPlanBuilder::from(plan).project(columns)?.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, Int32Array, StringViewArray};

    #[test]
    fn nested_views_become_plain_and_batches_are_cast() {
        let inner = Field::new("item", DataType::Utf8View, true);
        let ty = DataType::Struct(Fields::from(vec![
            Field::new("tags", DataType::List(Arc::new(inner)), true),
            Field::new("n", DataType::Int32, false),
        ]));
        let expected = DataType::Struct(Fields::from(vec![
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ),
            Field::new("n", DataType::Int32, false),
        ]));
        assert_eq!(plain_type(&ty), expected);

        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new("i", DataType::Int32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringViewArray::from(vec![
                    Some("a long enough string"),
                    None,
                ])) as ArrayRef,
                Arc::new(Int32Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        let plain = plain_schema(&schema);
        assert_eq!(plain.field(0).data_type(), &DataType::Utf8);
        let cast = plain_batch(batch, &plain).unwrap();
        assert_eq!(cast.schema(), plain);
        assert_eq!(
            cast.column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .unwrap()
                .value(0),
            "a long enough string"
        );
    }
}
