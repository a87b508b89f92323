//! Functions about the caller, for grants' filters, row policies and masks:
//! `current_user`, `current_user_groups()` and `user_attribute('name')`. Each is fixed for
//! a session (its principal's), so a condition such as `region = user_attribute('region')`
//! becomes a comparison with a literal when planned.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;

use crate::state::identity::{AttributeValue, Attributes};

/// Names of the functions whose value is the caller's: a policy using them is personal
/// (its results are kept per caller) but not time-relative.
pub(crate) const CALLER_FUNCTIONS: &[&str] =
    &["current_user", "current_user_groups", "user_attribute"];

/// Registers the caller's functions for `email`, a member of `groups` with `attributes`;
/// `lists` names the attributes that are lists (for every user).
pub(crate) fn register(
    ctx: &SessionContext,
    email: &str,
    groups: &[String],
    attributes: &Attributes,
    lists: &BTreeSet<String>,
) {
    ctx.register_udf(ScalarUDF::from(Fact::new(
        "current_user",
        ScalarValue::Utf8(Some(email.to_string())),
    )));
    ctx.register_udf(ScalarUDF::from(Fact::new(
        "current_user_groups",
        strings(groups),
    )));
    ctx.register_udf(ScalarUDF::from(UserAttribute {
        attributes: attributes.clone(),
        lists: lists.clone(),
        signature: Signature::one_of(
            vec![
                TypeSignature::Exact(vec![DataType::Utf8]),
                TypeSignature::Exact(vec![DataType::Utf8View]),
                TypeSignature::Exact(vec![DataType::LargeUtf8]),
            ],
            Volatility::Stable,
        ),
    }));
}

/// A list of strings as a scalar.
fn strings(values: &[String]) -> ScalarValue {
    let items: Vec<ScalarValue> = values
        .iter()
        .map(|v| ScalarValue::Utf8(Some(v.clone())))
        .collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&items, &DataType::Utf8))
}

/// A function without arguments whose value is fixed for the session.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Fact {
    name: &'static str,
    value: ScalarValue,
    signature: Signature,
}

impl Fact {
    fn new(name: &'static str, value: ScalarValue) -> Self {
        Self {
            name,
            value,
            signature: Signature::nullary(Volatility::Stable),
        }
    }
}

impl ScalarUDFImpl for Fact {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.value.data_type())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

/// `user_attribute('region')`: the caller's attribute as text, or a list of text for an
/// attribute some user holds as a list; NULL when the caller has none of that name.
#[derive(Debug, PartialEq, Eq, Hash)]
struct UserAttribute {
    attributes: Attributes,
    /// Attributes that are lists, for every user.
    lists: BTreeSet<String>,
    signature: Signature,
}

impl UserAttribute {
    fn value(&self, name: Option<&ScalarValue>) -> Result<ScalarValue> {
        let Some(Some(name)) = name.map(|n| n.try_as_str().flatten()) else {
            return plan_err!(
                "user_attribute takes the attribute's name as a literal, as in user_attribute('region')"
            );
        };
        let list = self.lists.contains(name);
        Ok(match (self.attributes.get(name), list) {
            (Some(AttributeValue::One(v)), false) => ScalarValue::Utf8(Some(v.clone())),
            (Some(AttributeValue::One(v)), true) => strings(std::slice::from_ref(v)),
            (Some(AttributeValue::Many(vs)), _) => strings(vs),
            (None, false) => ScalarValue::Utf8(None),
            (None, true) => ScalarValue::try_from(&strings(&[]).data_type())?,
        })
    }
}

impl ScalarUDFImpl for UserAttribute {
    fn name(&self) -> &str {
        "user_attribute"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        exec_err!("user_attribute's type is that of the attribute named")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let value = self.value(args.scalar_arguments.first().copied().flatten())?;
        Ok(Arc::new(Field::new(self.name(), value.data_type(), true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match args.args.first() {
            Some(ColumnarValue::Scalar(name)) => Ok(ColumnarValue::Scalar(self.value(Some(name))?)),
            _ => self.value(None).map(ColumnarValue::Scalar),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;

    async fn show(ctx: &SessionContext, sql: &str) -> Result<String> {
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(pretty_format_batches(&batches)?.to_string())
    }

    #[tokio::test]
    async fn the_callers_functions_give_its_email_groups_and_attributes() {
        let ctx = SessionContext::new();
        let attributes = Attributes::from([
            ("region".into(), AttributeValue::One("EU".into())),
            (
                "teams".into(),
                AttributeValue::Many(vec!["a".into(), "b".into()]),
            ),
        ]);
        let lists = BTreeSet::from(["teams".to_string(), "sites".to_string()]);
        register(
            &ctx,
            "ann@example.com",
            &["Everyone".into(), "sales".into()],
            &attributes,
            &lists,
        );
        let out = show(
            &ctx,
            "SELECT current_user AS u, user_attribute('region') AS r, \
             array_has(user_attribute('teams'), 'b') AS in_b, \
             array_has(current_user_groups(), 'sales') AS in_sales, \
             user_attribute('unset') IS NULL AS unset, \
             array_has(user_attribute('sites'), 'x') IS NULL AS no_sites",
        )
        .await
        .unwrap();
        assert!(
            out.contains("| ann@example.com | EU | true | true     | true  | true     |"),
            "{out}"
        );
        let e = show(
            &ctx,
            "SELECT user_attribute(CAST(1 AS VARCHAR) || 'x') FROM (VALUES (1))",
        )
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(e.contains("as a literal"), "{e}");
    }
}
