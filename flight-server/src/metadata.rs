//! What Quiver tells metadata-browsing clients (JDBC's `DatabaseMetaData`, SQLAlchemy,
//! DBeaver, Tableau, ADBC): `GetSqlInfo`, `GetXdbcTypeInfo` and the key-listing schemas.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, AsArray, MapArray, RecordBatch, StructArray, UnionArray};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, UnionFields};
use arrow::error::ArrowError;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetSqlInfo, Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity,
    SqlSupportedTransaction, XdbcDataType,
};
use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;

/// The server's name, as clients display it.
pub(crate) const SERVER_NAME: &str = "Quiver";

/// Answers to `GetSqlInfo`: every id the Flight SQL spec defines (JDBC's
/// `DatabaseMetaData` getters fail on a missing one), `0` for "no limit" where that is true.
/// `statement_timeout` is `query.timeout`.
pub(crate) fn sql_info(statement_timeout: std::time::Duration) -> SqlInfoData {
    let mut b = SqlInfoDataBuilder::new();
    // Server
    b.append(SqlInfo::FlightSqlServerName, SERVER_NAME);
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    // Writable where a grant allows (`write`) and in each user's own schema.
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerSubstraitMinVersion, "");
    b.append(SqlInfo::FlightSqlServerSubstraitMaxVersion, "");
    b.append(
        SqlInfo::FlightSqlServerStatementTimeout,
        i32::try_from(statement_timeout.as_millis()).unwrap_or(i32::MAX),
    );
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0_i32);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    // SQL language
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, true);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    let keywords: Vec<String> = ALL_KEYWORDS.iter().map(|k| k.to_string()).collect();
    b.append(SqlInfo::SqlKeywords, keywords);
    b.append(SqlInfo::SqlNumericFunctions, NUMERIC_FUNCTIONS);
    b.append(SqlInfo::SqlStringFunctions, STRING_FUNCTIONS);
    b.append(SqlInfo::SqlSystemFunctions, SYSTEM_FUNCTIONS);
    b.append(SqlInfo::SqlDatetimeFunctions, DATETIME_FUNCTIONS);
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(SqlInfo::SqlSupportedGroupBy, 0b11_i32);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(SqlInfo::SqlSupportedGrammar, 0b11_i32);
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    b.append(SqlInfo::SqlOuterJoinsSupportLevel, 2_i32);
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSchemasSupportedActions, 0_i32);
    b.append(SqlInfo::SqlCatalogsSupportedActions, 0_i32);
    b.append(SqlInfo::SqlSupportedPositionedCommands, 0_i32);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(SqlInfo::SqlSupportedSubqueries, 0b1111_i32);
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(SqlInfo::SqlSupportedUnions, 0b11_i32);
    b.append(SqlInfo::SqlMaxColumnNameLength, 63_i64);
    b.append(SqlInfo::SqlDbSchemaNameLength, 63_i64);
    b.append(SqlInfo::SqlMaxTableNameLength, 63_i64);
    b.append(SqlInfo::SqlMaxCatalogNameLength, 63_i64);
    b.append(SqlInfo::SqlMaxStatementLength, 0_i64);
    b.append(SqlInfo::SqlMaxConnections, 0_i64);
    b.append(SqlInfo::SqlDefaultTransactionIsolation, 0_i64);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlSupportedTransactionsIsolationLevels, 0_i32);
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, true);
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    b.append(SqlInfo::SqlSupportsConvert, conversions());
    // Entry-level SQL-92 (`SupportedAnsi92SqlGrammarLevel::Ansi92EntrySql`).
    b.append(SqlInfo::SqlAnsi92SupportedLevel, 0b1_i32);
    // No fixed limits (0): literals, columns and tables in a statement are bounded by
    // `query.max_sql_length` and `query.max_plan_nodes`, not by a count of their own.
    for unlimited in [
        SqlInfo::SqlMaxBinaryLiteralLength,
        SqlInfo::SqlMaxCharLiteralLength,
        SqlInfo::SqlMaxColumnsInGroupBy,
        SqlInfo::SqlMaxColumnsInIndex,
        SqlInfo::SqlMaxColumnsInOrderBy,
        SqlInfo::SqlMaxColumnsInSelect,
        SqlInfo::SqlMaxColumnsInTable,
        SqlInfo::SqlMaxCursorNameLength,
        SqlInfo::SqlMaxIndexLength,
        SqlInfo::SqlMaxProcedureNameLength,
        SqlInfo::SqlMaxRowSize,
        SqlInfo::SqlMaxStatements,
        SqlInfo::SqlMaxTablesInSelect,
        SqlInfo::SqlMaxUsernameLength,
    ] {
        b.append(unlimited, 0_i64);
    }
    b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, true);
    // Results are read forward only (`SqlSupportedResultSetType::ForwardOnly` = 1) and
    // read-only (`SqlSupportedResultSetConcurrency::ReadOnly` = 1), as bitmasks.
    b.append(SqlInfo::SqlSupportedResultSetTypes, 1_i32 << 1);
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified,
        1_i32 << 1,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly,
        1_i32 << 1,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive,
        0_i32,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive,
        0_i32,
    );
    b.build().expect("static SqlInfo data")
}

/// The `GetSqlInfo` answer to `query`, as the spec spells it. arrow-rs names the entries
/// of `int32_to_int32_list_map` `keys`/`values`; the spec says `key`/`value`, and Arrow
/// Java (the JDBC driver) looks them up by those names, reading every key as null
/// otherwise, so `supportsConvert` answered false for every pair.
pub(crate) fn sql_info_batch(
    query: CommandGetSqlInfo,
    data: &SqlInfoData,
) -> Result<RecordBatch, FlightError> {
    let batch = query.into_builder(data).build()?;
    let (schema, mut columns, _) = batch.into_parts();
    let union = columns[1].as_union().clone();
    let (fields, type_ids, offsets, children) = union.into_parts();
    let (children, fields): (Vec<ArrayRef>, Vec<(i8, FieldRef)>) = children
        .into_iter()
        .zip(fields.iter())
        .map(|(child, (id, field))| match child.as_map_opt() {
            Some(map) => {
                let map = spec_map(map.clone())?;
                let field = Field::new(field.name(), map.data_type().clone(), field.is_nullable());
                Ok((Arc::new(map) as ArrayRef, (id, Arc::new(field))))
            }
            None => Ok((child, (id, field.clone()))),
        })
        .collect::<Result<Vec<_>, ArrowError>>()?
        .into_iter()
        .unzip();
    let fields = UnionFields::from_iter(fields);
    columns[1] = Arc::new(UnionArray::try_new(fields, type_ids, offsets, children)?);
    let mut schema_fields: Vec<Field> =
        schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    schema_fields[1] = schema_fields[1]
        .clone()
        .with_data_type(columns[1].data_type().clone());
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(schema_fields)),
        columns,
    )?)
}

/// `map` with its entries named `key` and `value`.
fn spec_map(map: MapArray) -> Result<MapArray, ArrowError> {
    let (entries_field, offsets, entries, nulls, ordered) = map.into_parts();
    let (fields, columns, entry_nulls) = entries.into_parts();
    let names = ["key", "value"];
    let fields: Fields = fields
        .iter()
        .zip(names)
        .map(|(f, name)| f.as_ref().clone().with_name(name))
        .collect();
    let entries = StructArray::try_new(fields.clone(), columns, entry_nulls)?;
    let entries_field = Field::new(
        entries_field.name(),
        DataType::Struct(fields),
        entries_field.is_nullable(),
    );
    MapArray::try_new(Arc::new(entries_field), offsets, entries, nulls, ordered)
}

/// Which `CAST(… AS …)` conversions DataFusion performs, as `SqlSupportsConvert` ids: every
/// number, text, boolean, date and timestamp to text and back; numbers among themselves;
/// dates and timestamps to each other; binary to and from text.
fn conversions() -> std::collections::HashMap<i32, Vec<i32>> {
    use arrow_flight::sql::SqlSupportsConvert as C;
    let numbers = [
        C::SqlConvertBigint,
        C::SqlConvertBit,
        C::SqlConvertDecimal,
        C::SqlConvertFloat,
        C::SqlConvertInteger,
        C::SqlConvertNumeric,
        C::SqlConvertReal,
        C::SqlConvertSmallint,
        C::SqlConvertTinyint,
    ];
    let text = [
        C::SqlConvertChar,
        C::SqlConvertVarchar,
        C::SqlConvertLongvarchar,
    ];
    let times = [C::SqlConvertDate, C::SqlConvertTimestamp];
    let binary = [
        C::SqlConvertBinary,
        C::SqlConvertVarbinary,
        C::SqlConvertLongvarbinary,
    ];
    let ids = |kinds: &[&[C]]| -> Vec<i32> {
        kinds
            .iter()
            .flat_map(|k| k.iter().map(|c| *c as i32))
            .collect()
    };
    let mut map = std::collections::HashMap::new();
    for from in numbers {
        map.insert(from as i32, ids(&[&numbers, &text]));
    }
    for from in text {
        map.insert(
            from as i32,
            ids(&[&numbers, &text, &times, &binary, &[C::SqlConvertTime]]),
        );
    }
    for from in times {
        map.insert(from as i32, ids(&[&times, &text]));
    }
    map.insert(
        C::SqlConvertTime as i32,
        ids(&[&[C::SqlConvertTime], &text]),
    );
    for from in binary {
        map.insert(from as i32, ids(&[&binary, &text]));
    }
    map
}

const NUMERIC_FUNCTIONS: &[&str] = &[
    "abs", "acos", "asin", "atan", "atan2", "cbrt", "ceil", "cos", "cot", "degrees", "exp",
    "floor", "ln", "log", "log10", "log2", "mod", "pi", "power", "radians", "random", "round",
    "signum", "sin", "sqrt", "tan", "trunc",
];
const STRING_FUNCTIONS: &[&str] = &[
    "ascii",
    "btrim",
    "char_length",
    "concat",
    "concat_ws",
    "initcap",
    "left",
    "length",
    "lower",
    "lpad",
    "ltrim",
    "md5",
    "octet_length",
    "regexp_like",
    "regexp_match",
    "regexp_replace",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "split_part",
    "starts_with",
    "strpos",
    "substr",
    "substring",
    "to_hex",
    "translate",
    "trim",
    "upper",
];
const SYSTEM_FUNCTIONS: &[&str] = &["arrow_typeof", "coalesce", "nullif", "version"];
const DATETIME_FUNCTIONS: &[&str] = &[
    "current_date",
    "current_time",
    "date_bin",
    "date_part",
    "date_trunc",
    "extract",
    "from_unixtime",
    "make_date",
    "now",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_unixtime",
];

fn xdbc(
    name: &str,
    data_type: XdbcDataType,
    column_size: Option<i32>,
    literal: Option<&str>,
    scales: Option<(i32, i32)>,
    radix: Option<i32>,
) -> XdbcTypeInfo {
    XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        column_size,
        literal_prefix: literal.map(Into::into),
        literal_suffix: literal.map(Into::into),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: matches!(data_type, XdbcDataType::XdbcVarchar),
        searchable: Searchable::Full,
        unsigned_attribute: radix.map(|_| false),
        fixed_prec_scale: false,
        auto_increment: Some(false),
        local_type_name: Some(name.into()),
        minimum_scale: scales.map(|s| s.0),
        maximum_scale: scales.map(|s| s.1),
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: radix,
        interval_precision: None,
    }
}

/// Answers to `GetXdbcTypeInfo`: the SQL types DataFusion reads and returns.
pub(crate) static XDBC_INFO: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    use XdbcDataType as X;
    let mut b = XdbcTypeInfoDataBuilder::new();
    for info in [
        xdbc("BOOLEAN", X::XdbcBit, Some(1), None, None, None),
        xdbc("TINYINT", X::XdbcTinyint, Some(3), None, None, Some(10)),
        xdbc("SMALLINT", X::XdbcSmallint, Some(5), None, None, Some(10)),
        xdbc("INTEGER", X::XdbcInteger, Some(10), None, None, Some(10)),
        xdbc("BIGINT", X::XdbcBigint, Some(19), None, None, Some(10)),
        xdbc("REAL", X::XdbcFloat, Some(24), None, None, Some(2)),
        xdbc("DOUBLE", X::XdbcDouble, Some(53), None, None, Some(2)),
        xdbc(
            "DECIMAL",
            X::XdbcDecimal,
            Some(38),
            None,
            Some((0, 38)),
            Some(10),
        ),
        xdbc(
            "VARCHAR",
            X::XdbcVarchar,
            Some(i32::MAX),
            Some("'"),
            None,
            None,
        ),
        xdbc("BINARY", X::XdbcBinary, Some(i32::MAX), None, None, None),
        xdbc("DATE", X::XdbcDate, Some(10), Some("'"), None, None),
        xdbc("TIME", X::XdbcTime, Some(18), Some("'"), None, None),
        xdbc(
            "TIMESTAMP",
            X::XdbcTimestamp,
            Some(29),
            Some("'"),
            None,
            None,
        ),
    ] {
        b.append(info);
    }
    b.build().expect("static XdbcTypeInfo data")
});

/// A column's SQL type as `GetXdbcTypeInfo` names it, with its precision and scale where
/// they apply (`None` elsewhere).
pub(crate) fn sql_type(data_type: &DataType) -> (&'static str, Option<u8>, Option<i8>) {
    match data_type {
        DataType::Boolean => ("BOOLEAN", Some(1), None),
        DataType::Int8 | DataType::UInt8 => ("TINYINT", Some(3), Some(0)),
        DataType::Int16 | DataType::UInt16 => ("SMALLINT", Some(5), Some(0)),
        DataType::Int32 | DataType::UInt32 => ("INTEGER", Some(10), Some(0)),
        DataType::Int64 | DataType::UInt64 => ("BIGINT", Some(19), Some(0)),
        DataType::Float16 | DataType::Float32 => ("REAL", Some(24), None),
        DataType::Float64 => ("DOUBLE", Some(53), None),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => ("DECIMAL", Some(*p), Some(*s)),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ("VARCHAR", None, None),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => ("BINARY", None, None),
        DataType::Date32 | DataType::Date64 => ("DATE", Some(10), None),
        DataType::Time32(_) | DataType::Time64(_) => ("TIME", Some(18), None),
        DataType::Timestamp(_, _) => ("TIMESTAMP", Some(29), None),
        DataType::Interval(_) | DataType::Duration(_) => ("INTERVAL", None, None),
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::FixedSizeList(_, _) => ("ARRAY", None, None),
        DataType::Struct(_) => ("STRUCT", None, None),
        DataType::Map(_, _) => ("MAP", None, None),
        _ => ("OTHER", None, None),
    }
}

/// `field` with the column metadata Flight SQL defines for `GetTables(include_schema)`
/// (`ARROW:FLIGHT:SQL:*`), from which drivers fill JDBC's `getColumns` and ADBC's xdbc
/// fields: where the column is, its [`typed`] metadata and its description (`remarks`).
pub(crate) fn described(
    field: &Field,
    catalog: &str,
    schema: &str,
    table: &str,
    remarks: Option<&str>,
) -> Field {
    let field = typed(field);
    let mut metadata = field.metadata().clone();
    let mut set = |key: &str, value: &str| {
        metadata.insert(format!("ARROW:FLIGHT:SQL:{key}"), value.to_string());
    };
    set("CATALOG_NAME", catalog);
    // The spec names it `DB_SCHEMA_NAME`; the Go and Java drivers read `SCHEMA_NAME`.
    set("DB_SCHEMA_NAME", schema);
    set("SCHEMA_NAME", schema);
    set("TABLE_NAME", table);
    if let Some(remarks) = remarks {
        set("REMARKS", remarks);
    }
    field.with_metadata(metadata)
}

/// `schema` of a statement's result with [`typed`] column metadata on every field: JDBC's
/// `ResultSetMetaData` reads precision and scale only from there.
pub(crate) fn result_schema(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema.fields().iter().map(|f| typed(f)).collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// `field` with the column metadata Flight SQL defines that its type tells: type name,
/// precision, scale, and what a read-only server can say.
fn typed(field: &Field) -> Field {
    let (name, precision, scale) = sql_type(field.data_type());
    let mut metadata = field.metadata().clone();
    let mut set = |key: &str, value: String| {
        metadata.insert(format!("ARROW:FLIGHT:SQL:{key}"), value);
    };
    set("TYPE_NAME", name.into());
    if let Some(p) = precision {
        set("PRECISION", p.to_string());
    }
    if let Some(s) = scale {
        set("SCALE", s.to_string());
    }
    set("IS_AUTO_INCREMENT", "0".into());
    set(
        "IS_CASE_SENSITIVE",
        if name == "VARCHAR" { "1" } else { "0" }.into(),
    );
    set("IS_READ_ONLY", "1".into());
    set("IS_SEARCHABLE", "1".into());
    field.clone().with_metadata(metadata)
}

/// Schema of `GetPrimaryKeys` results (always empty: Quiver tables have no declared keys).
pub(crate) fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// Schema of `GetExportedKeys`, `GetImportedKeys` and `GetCrossReference` results.
pub(crate) fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conversion_map_is_named_as_the_spec_says() {
        let query = CommandGetSqlInfo {
            info: vec![SqlInfo::SqlSupportsConvert as u32],
        };
        let batch = sql_info_batch(query, &sql_info(std::time::Duration::ZERO)).unwrap();
        let DataType::Union(fields, _) = batch.schema().field(1).data_type().clone() else {
            panic!("value is a union");
        };
        let (_, map) = fields
            .iter()
            .find(|(_, f)| f.name() == "int32_to_int32_list_map")
            .unwrap();
        let DataType::Map(entries, _) = map.data_type() else {
            panic!("a map");
        };
        let DataType::Struct(kv) = entries.data_type() else {
            panic!("a struct");
        };
        assert_eq!(kv[0].name(), "key");
        assert_eq!(kv[1].name(), "value");
        let union = batch.column(1).as_union();
        let entries = union.value(0);
        let entries = entries.as_map().value(0);
        let keys = entries
            .column(0)
            .as_primitive::<arrow::datatypes::Int32Type>();
        assert!(
            keys.values()
                .contains(&(arrow_flight::sql::SqlSupportsConvert::SqlConvertInteger as i32))
        );
    }
}
