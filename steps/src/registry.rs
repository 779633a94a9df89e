//! What this build can run: the ordinary plugins (shared), the built-ins the engine executes itself,
//! and the plugin families a build may leave out.

use crate::{Plugin, PluginInfo, alertmanager, flow, http, mlflow, notify, prometheus, shell};
use std::sync::Arc;

/// The steps the engine executes itself, because they evaluate conditions over the run's state or
/// keep durable deadlines. The engine matches on this instead of comparing `uses:` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    Branch,
    Assert,
    Sleep,
    WaitUntil,
}

impl Builtin {
    pub const ALL: [Builtin; 4] = [
        Builtin::Branch,
        Builtin::Assert,
        Builtin::Sleep,
        Builtin::WaitUntil,
    ];

    pub fn info(self) -> &'static PluginInfo {
        match self {
            Builtin::Branch => &flow::BRANCH,
            Builtin::Assert => &flow::ASSERT,
            Builtin::Sleep => &flow::SLEEP,
            Builtin::WaitUntil => &flow::WAIT_UNTIL,
        }
    }

    /// Its `uses:` name, e.g. `flow.branch`.
    pub fn name(self) -> &'static str {
        self.info().name
    }
}

/// How the engine runs a step of a given `uses:`.
#[derive(Clone)]
pub enum Runner {
    /// Shared, so a server can hand the same plugin (and its connection pools) to many drivers.
    Plugin(Arc<dyn Plugin>),
    /// Executed by the engine itself.
    Builtin(Builtin),
}

impl Runner {
    pub fn info(&self) -> &'static PluginInfo {
        match self {
            Runner::Plugin(p) => p.info(),
            Runner::Builtin(b) => b.info(),
        }
    }

    pub fn builtin(&self) -> Option<Builtin> {
        match self {
            Runner::Plugin(_) => None,
            Runner::Builtin(b) => Some(*b),
        }
    }
}

/// Two plugins were registered under one `uses:` name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a plugin named `{0}` is registered already")]
pub struct Duplicate(pub &'static str);

/// Every plugin this build knows, by `uses:` name.
#[derive(Clone)]
pub struct Registry {
    entries: Vec<Runner>,
    /// `uses:` name → its entry: validation looks up every step's plugin, several times.
    by_name: std::collections::HashMap<&'static str, usize>,
}

impl Registry {
    pub fn builtin() -> Registry {
        let mut r = Registry {
            entries: Vec::new(),
            by_name: Default::default(),
        };
        // A build without the optional families adds nothing to it.
        #[cfg_attr(
            not(any(feature = "mongodb", feature = "kubernetes")),
            allow(unused_mut)
        )]
        let mut plugins: Vec<Arc<dyn Plugin>> = vec![
            Arc::new(shell::ShellRun),
            Arc::new(http::HttpRequest::default()),
            Arc::new(flow::Noop),
            Arc::new(mlflow::LatestVersions),
            Arc::new(mlflow::ModelVersion),
            Arc::new(mlflow::RunMetrics),
            Arc::new(mlflow::SetAlias),
            Arc::new(mlflow::Rollback),
            Arc::new(prometheus::Query),
            Arc::new(prometheus::QueryRange),
            Arc::new(alertmanager::Alerts),
            Arc::new(alertmanager::Silence),
            Arc::new(notify::slack::Slack),
            Arc::new(notify::email::Email),
        ];
        #[cfg(feature = "mongodb")]
        plugins.extend([
            Arc::new(crate::mongodb::Aggregate) as Arc<dyn Plugin>,
            Arc::new(crate::mongodb::Find),
            Arc::new(crate::mongodb::Count),
        ]);
        #[cfg(feature = "kubernetes")]
        plugins.extend([
            Arc::new(crate::kubernetes::Exec) as Arc<dyn Plugin>,
            Arc::new(crate::kubernetes::Logs),
            Arc::new(crate::kubernetes::Patch),
            Arc::new(crate::kubernetes::RolloutRestart),
            Arc::new(crate::kubernetes::Get),
        ]);
        for p in plugins {
            // The built-in names are distinct; the registry tests hold them to it.
            let _ = r.register(p);
        }
        for b in Builtin::ALL {
            r.push(Runner::Builtin(b));
        }
        r
    }

    fn push(&mut self, runner: Runner) {
        self.by_name.insert(runner.info().name, self.entries.len());
        self.entries.push(runner);
    }

    /// Adds a plugin; its name must not be taken.
    pub fn register(&mut self, plugin: Arc<dyn Plugin>) -> Result<(), Duplicate> {
        let name = plugin.info().name;
        if self.get(name).is_some() {
            return Err(Duplicate(name));
        }
        self.push(Runner::Plugin(plugin));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Runner> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// The ordinary plugin of that name, shared (built-ins have none: the engine runs them).
    pub fn plugin(&self, name: &str) -> Option<Arc<dyn Plugin>> {
        match self.get(name)? {
            Runner::Plugin(p) => Some(Arc::clone(p)),
            Runner::Builtin(_) => None,
        }
    }

    /// The ordinary plugins, in registration order.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<dyn Plugin>> {
        self.entries.iter().filter_map(|r| match r {
            Runner::Plugin(p) => Some(p),
            Runner::Builtin(_) => None,
        })
    }

    /// The built-in a `uses:` name stands for, if it is one.
    pub fn builtin_of(&self, name: &str) -> Option<Builtin> {
        self.get(name).and_then(Runner::builtin)
    }

    /// Why `name` is missing, when it belongs to a plugin family this build lacks; `None` for a
    /// registered name and for a name no family has (an unknown plugin).
    pub fn not_in_build(&self, name: &str) -> Option<NotInBuild> {
        if self.get(name).is_some() {
            return None;
        }
        NotInBuild::find(FAMILIES, name)
    }

    /// The registered names and those of the plugin families this build lacks: what a misspelt
    /// `uses:` may have meant.
    pub fn known_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        let lacking = FAMILIES
            .iter()
            .flat_map(|f| f.plugins.iter().copied())
            .filter(|n| self.get(n).is_none());
        self.names().chain(lacking)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|r| r.info().name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Runner> {
        self.entries.iter()
    }
}

/// A family of plugins behind a cargo feature of `runbook-steps` (forwarded by `runbook-engine`), so
/// a build can leave out its client crates. Its names are listed even when the feature is off, so a
/// runbook that uses one is told the build lacks it rather than that the name is unknown.
#[derive(Debug)]
pub struct Family {
    pub feature: &'static str,
    /// Whether this build was compiled with the feature.
    pub enabled: bool,
    /// The `uses:` names the family brings.
    pub plugins: &'static [&'static str],
}

pub static FAMILIES: &[Family] = &[
    Family {
        feature: "kubernetes",
        enabled: cfg!(feature = "kubernetes"),
        plugins: &[
            "kubernetes.exec",
            "kubernetes.logs",
            "kubernetes.patch",
            "kubernetes.rollout_restart",
            "kubernetes.get",
        ],
    },
    Family {
        feature: "mongodb",
        enabled: cfg!(feature = "mongodb"),
        plugins: &["mongodb.aggregate", "mongodb.count", "mongodb.find"],
    },
];

/// A plugin of a known family that this build does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is not in this build ({})", self.why())]
pub struct NotInBuild {
    pub name: String,
    pub feature: &'static str,
    pub enabled: bool,
}

impl NotInBuild {
    fn why(&self) -> String {
        if self.enabled {
            format!("the `{}` plugins are not implemented yet", self.feature)
        } else {
            format!("built without the `{}` feature", self.feature)
        }
    }

    /// What the author can do about it.
    pub fn help(&self) -> String {
        if self.enabled {
            "`runbook plugins` lists the plugins this build has".to_string()
        } else {
            format!(
                "a build with `--features {}` has it; `runbook plugins` lists the plugins this build has",
                self.feature
            )
        }
    }

    fn find(families: &[Family], name: &str) -> Option<NotInBuild> {
        families
            .iter()
            .find(|f| f.plugins.contains(&name))
            .map(|f| NotInBuild {
                name: name.to_string(),
                feature: f.feature,
                enabled: f.enabled,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StepContext, StepFuture};
    use std::collections::HashSet;

    #[test]
    fn builtin_names_are_distinct_and_all_there() {
        let r = Registry::builtin();
        let names: Vec<&str> = r.names().collect();
        let distinct: HashSet<&str> = names.iter().copied().collect();
        assert_eq!(names.len(), distinct.len(), "{names:?}");
        for n in [
            "shell.run",
            "http.request",
            "flow.noop",
            "flow.branch",
            "flow.assert",
            "flow.sleep",
            "flow.wait_until",
            "prometheus.query",
            "prometheus.query_range",
            "alertmanager.alerts",
            "alertmanager.silence",
        ] {
            assert!(r.get(n).is_some(), "{n} missing");
        }
        assert!(r.get("shell").is_none());
    }

    #[test]
    fn every_builtin_is_registered_under_its_own_name() {
        let r = Registry::builtin();
        for b in Builtin::ALL {
            assert_eq!(r.builtin_of(b.name()), Some(b), "{}", b.name());
            assert!(b.name().starts_with("flow."), "{}", b.name());
        }
        assert_eq!(
            r.builtin_of("flow.noop"),
            None,
            "noop is an ordinary plugin"
        );
        assert_eq!(r.builtin_of("shell.run"), None);
        assert_eq!(r.builtin_of("flow.nope"), None);
        assert_eq!(
            r.iter().filter_map(Runner::builtin).count(),
            Builtin::ALL.len()
        );
    }

    #[test]
    fn a_taken_name_is_refused_and_the_first_plugin_stays() {
        let mut r = Registry::builtin();
        let before = r.names().count();
        assert_eq!(
            r.register(Arc::new(flow::Noop)),
            Err(Duplicate("flow.noop"))
        );
        assert_eq!(r.names().count(), before);
    }

    #[test]
    fn plugins_are_shared_not_copied() {
        let r = Registry::builtin();
        let a = r.plugin("shell.run").expect("registered");
        let b = r.plugin("shell.run").expect("registered");
        assert!(Arc::ptr_eq(&a, &b));
        // Two registries (two drivers) can hold the same plugin.
        let mut other = Registry {
            entries: Vec::new(),
            by_name: Default::default(),
        };
        other.register(Arc::clone(&a)).expect("free name");
        assert!(Arc::ptr_eq(
            &other.plugin("shell.run").expect("registered"),
            &a
        ));
        assert!(
            r.plugin("flow.branch").is_none(),
            "built-ins run in the engine"
        );
        let families = if cfg!(feature = "mongodb") { 3 } else { 0 }
            + if cfg!(feature = "kubernetes") { 5 } else { 0 };
        assert_eq!(r.plugins().count(), 14 + families);
    }

    /// Stands in for a family plugin that a later build registers.
    struct Fake(&'static PluginInfo);

    impl Plugin for Fake {
        fn info(&self) -> &'static PluginInfo {
            self.0
        }

        fn run<'a>(&'a self, _: serde_json::Value, _: &'a StepContext) -> StepFuture<'a> {
            Box::pin(async { Ok(serde_json::Value::Null) })
        }
    }

    static COUNT: PluginInfo = PluginInfo {
        name: "mongodb.count",
        summary: "",
        class: crate::SideEffect::Read,
        fields: &[],
        exactly_one_of: &[],
        output: "",
        example: "",
        connection: None,
    };

    #[test]
    fn a_family_plugin_not_registered_is_not_in_this_build() {
        let mut r = Registry::builtin();
        // Every plugin a family lists is registered exactly when its feature is on.
        for family in FAMILIES {
            for name in family.plugins {
                assert_eq!(
                    r.not_in_build(name).is_some(),
                    !family.enabled,
                    "{name} ({})",
                    family.feature
                );
                assert!(r.known_names().any(|n| n == *name), "{name}");
            }
        }
        // Unknown names and registered ones are not a build's lack.
        assert_eq!(r.not_in_build("mongodb.nope"), None);
        assert_eq!(r.not_in_build("shell.run"), None);
        if !cfg!(feature = "mongodb") {
            let missing = r.not_in_build("mongodb.count").expect("a family name");
            assert!(
                missing
                    .to_string()
                    .starts_with("`mongodb.count` is not in this build ("),
                "{missing}"
            );
            let before = r.known_names().count();
            r.register(Arc::new(Fake(&COUNT))).expect("free name");
            assert_eq!(r.not_in_build("mongodb.count"), None);
            assert_eq!(r.known_names().count(), before, "each name once");
        }
    }

    #[test]
    fn the_message_says_whether_the_feature_is_off_or_the_plugin_is_not_written_yet() {
        let families = [
            Family {
                feature: "kubernetes",
                enabled: false,
                plugins: &["kubernetes.logs"],
            },
            Family {
                feature: "mongodb",
                enabled: true,
                plugins: &["mongodb.count"],
            },
        ];
        let off = NotInBuild::find(&families, "kubernetes.logs").expect("listed");
        assert_eq!(
            off.to_string(),
            "`kubernetes.logs` is not in this build (built without the `kubernetes` feature)"
        );
        assert!(
            off.help().contains("--features kubernetes"),
            "{}",
            off.help()
        );
        let on = NotInBuild::find(&families, "mongodb.count").expect("listed");
        assert_eq!(
            on.to_string(),
            "`mongodb.count` is not in this build (the `mongodb` plugins are not implemented yet)"
        );
        assert!(!on.help().contains("--features"), "{}", on.help());
        assert_eq!(NotInBuild::find(&families, "mongodb.logs"), None);
    }

    #[test]
    fn family_names_are_of_their_family_and_taken_by_no_one_else() {
        let r = Registry::builtin();
        let mut seen = HashSet::new();
        for f in FAMILIES {
            for name in f.plugins {
                assert_eq!(name.split_once('.').map(|(fam, _)| fam), Some(f.feature));
                assert!(seen.insert(*name), "{name} listed twice");
                assert!(r.builtin_of(name).is_none());
            }
        }
    }
}
