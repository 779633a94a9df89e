//! Keeps each plugin's declared `fields` (what the engine validates runbooks against) and its typed
//! `Input` (what `run` deserializes) in agreement: a field declared but not in the struct would pass
//! validation and then fail every run; a struct field that is required but declared optional would
//! do the same for runbooks that leave it out.

use runbook_steps::{ErrorKind, FieldType, Plugin, PluginInfo, Registry, StepError};
use serde_json::{Map, Value, json};

/// A value of the declared type, as a runbook could write it.
fn dummy(ty: &FieldType) -> Value {
    match ty {
        FieldType::String => json!("x"),
        FieldType::Number => json!(1.5),
        FieldType::Integer => json!(1),
        FieldType::Bool => json!(true),
        FieldType::Duration => json!("1s"),
        FieldType::Enum(values) => json!(values.first().expect("an enum has values")),
        FieldType::List(t) => json!([dummy(t)]),
        FieldType::Map(t) => json!({ "k": dummy(t) }),
        FieldType::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|f| (f.name.to_owned(), dummy(&f.ty)))
                .collect(),
        ),
        FieldType::Condition => json!("true"),
        FieldType::StepRefs => json!("a"),
        FieldType::Probe => json!({ "uses": "flow.noop", "with": {} }),
        FieldType::Any => json!("x"),
    }
}

/// A `with:` block holding every declared field (`all`) or only the required ones, and in both
/// cases exactly the first field of each `exactly_one_of` group.
fn with_block(info: &PluginInfo, all: bool) -> Value {
    let mut block = Map::new();
    for field in info.fields.iter().filter(|f| all || f.required) {
        block.insert(field.name.to_owned(), dummy(&field.ty));
    }
    for group in info.exactly_one_of {
        for name in group.iter().skip(1) {
            block.remove(*name);
        }
        if let Some(first) = group.first() {
            let field = info
                .fields
                .iter()
                .find(|f| f.name == *first)
                .unwrap_or_else(|| {
                    panic!("{}: exactly_one_of names undeclared `{first}`", info.name)
                });
            block.insert(field.name.to_owned(), dummy(&field.ty));
        }
    }
    Value::Object(block)
}

/// Deserializes `input` into the plugin's typed input, naming a plugin that cannot say.
fn check(plugin: &dyn Plugin, input: &Value) -> Result<(), StepError> {
    let r = plugin.check_input(input);
    if let Err(e) = &r
        && e.kind != ErrorKind::Input
    {
        panic!(
            "{}: check_input failed without judging the input: {}",
            plugin.info().name,
            e.message
        );
    }
    r
}

/// Every ordinary plugin of the build (built-ins have no typed input: the engine reads their `with`).
fn plugins(registry: &Registry) -> Vec<&dyn Plugin> {
    let plugins: Vec<&dyn Plugin> = registry.plugins().map(|p| p.as_ref()).collect();
    assert!(plugins.len() >= 3, "the registry lost its plugins");
    plugins
}

#[test]
fn every_declared_field_deserializes_into_the_typed_input() {
    let registry = Registry::builtin();
    for plugin in plugins(&registry) {
        let input = with_block(plugin.info(), true);
        if let Err(e) = check(plugin, &input) {
            panic!(
                "{}: the declared fields do not fit the typed input: {}\ninput: {input}",
                plugin.info().name,
                e.message
            );
        }
    }
}

#[test]
fn the_required_fields_alone_are_enough() {
    let registry = Registry::builtin();
    for plugin in plugins(&registry) {
        let input = with_block(plugin.info(), false);
        if let Err(e) = check(plugin, &input) {
            panic!(
                "{}: a field the schema calls optional is required by the typed input: {}\ninput: {input}",
                plugin.info().name,
                e.message
            );
        }
    }
}

#[test]
fn undeclared_fields_are_rejected() {
    let registry = Registry::builtin();
    for plugin in plugins(&registry) {
        let mut input = with_block(plugin.info(), true);
        input["not_a_declared_field"] = json!(1);
        match check(plugin, &input) {
            Err(e) if e.kind == ErrorKind::Input && e.message.contains("unknown field") => {}
            other => panic!(
                "{}: an undeclared field was not rejected as unknown: {:?}",
                plugin.info().name,
                other.map_err(|e| e.message)
            ),
        }
    }
}

/// A plugin that forgets `check_input` fails the checks above instead of passing them unexamined.
#[test]
fn a_plugin_without_check_input_is_caught() {
    struct Forgetful;
    impl Plugin for Forgetful {
        fn info(&self) -> &'static PluginInfo {
            Registry::builtin()
                .get("flow.noop")
                .expect("registered")
                .info()
        }
        fn run<'a>(
            &'a self,
            _: Value,
            _: &'a runbook_steps::StepContext,
        ) -> runbook_steps::StepFuture<'a> {
            Box::pin(async { Ok(Value::Null) })
        }
    }
    let caught = std::panic::catch_unwind(|| check(&Forgetful, &json!({})));
    assert!(caught.is_err(), "the default check_input passed");
}
