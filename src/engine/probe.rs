//! What `validate` runs besides planning: each scalar function call of a plan, once, on a
//! one-row column of its argument types, to find a function whose result does not have the type
//! it declared. Planning trusts the declared type, so such a query plans and then fails when it
//! runs on data (apache/datafusion#24632 was one: `to_timestamp(column)` with a session
//! timezone). Constant arguments are passed as constants, as at run time; the others as a NULL
//! column of their type, which takes a function's array path without needing data.

use std::sync::Arc;

use datafusion::arrow::array::new_null_array;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs,
};
use datafusion::prelude::SessionContext;

/// Problems with the function calls of `plan` (and its subqueries), one line each; empty when
/// every call returns what it declares.
pub fn functions(ctx: &SessionContext, plan: &LogicalPlan) -> Vec<String> {
    let options = Arc::new(ctx.state().config_options().as_ref().clone());
    let mut problems = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        let inputs = node.inputs();
        let schema = match inputs.as_slice() {
            [input] => input.schema().clone(),
            _ => node.schema().clone(),
        };
        let _ = node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(call) = e
                    && let Some(problem) = probe(call, &schema, &options)
                    && !problems.contains(&problem)
                {
                    problems.push(problem);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        });
        Ok(TreeNodeRecursion::Continue)
    });
    problems
}

/// Runs one call on a one-row input; `Some(problem)` when its result is not of the declared type.
fn probe(
    call: &datafusion::logical_expr::expr::ScalarFunction,
    schema: &datafusion::common::DFSchemaRef,
    options: &Arc<datafusion::common::config::ConfigOptions>,
) -> Option<String> {
    let fields: Vec<_> = call
        .args
        .iter()
        .map(|arg| arg.to_field(schema.as_ref()).map(|(_, field)| field))
        .collect::<Result<_, _>>()
        .ok()?;
    let constants: Vec<Option<&datafusion::common::ScalarValue>> = call
        .args
        .iter()
        .map(|arg| match arg {
            Expr::Literal(value, _) => Some(value),
            _ => None,
        })
        .collect();
    let return_field = call
        .func
        .return_field_from_args(ReturnFieldArgs {
            arg_fields: &fields,
            scalar_arguments: &constants,
        })
        .ok()?;
    let args = constants
        .iter()
        .zip(&fields)
        .map(|(constant, field)| match constant {
            Some(value) => ColumnarValue::Scalar((*value).clone()),
            None => ColumnarValue::Array(new_null_array(field.data_type(), 1)),
        })
        .collect();
    let declared = return_field.data_type().clone();
    let result = call
        .func
        .inner()
        .invoke_with_args(ScalarFunctionArgs {
            args,
            arg_fields: fields,
            number_rows: 1,
            return_field,
            config_options: options.clone(),
        })
        // A function may refuse a NULL where it wants data: that is not what this looks for.
        .ok()?;
    let produced = result.data_type();
    (produced != declared).then(|| {
        format!(
            "`{}` returns {produced} where it declares {declared}: the query plans but would fail when it runs on data",
            call.func.name()
        )
    })
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionConfig;

    use super::*;

    #[tokio::test]
    async fn a_function_whose_result_differs_from_its_declared_type_is_found() {
        let config =
            SessionConfig::new().set_str("datafusion.execution.time_zone", "Asia/Shanghai");
        let sql = "SELECT upper(s), to_timestamp(s), to_timestamp('2026-01-01') FROM (VALUES ('x')) AS t(s)";
        let ctx = SessionContext::new_with_config(config);
        let plan = ctx.sql(sql).await.unwrap().logical_plan().clone();
        // DataFusion 55's own to_timestamp (apache/datafusion#24632), on a column only.
        let problems = functions(&ctx, &plan);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "`to_timestamp` returns Timestamp(ns) where it declares Timestamp(ns, \"Asia/Shanghai\")"
            ),
            "{problems:?}"
        );
        // With flowhealth's annotated version, nothing.
        crate::udf::to_timestamp::register(&ctx);
        let plan = ctx.sql(sql).await.unwrap().logical_plan().clone();
        assert!(functions(&ctx, &plan).is_empty());
    }
}
