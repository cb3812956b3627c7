//! `portico groups`: Portico's own Groups (the cohorts of `/Group/[id]/$export`) in the state
//! store: `add` one defined by a member list or by one criterion, `list` them, `show` one with its
//! members resolved through the PMS (`crate::groups::members`), `remove` one.

use std::path::Path;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{ArgGroup, Subcommand};

use super::audit::open_repository;
use super::state_commands::{open_store, time_ms};
use crate::state::groups::{
    GroupCriterion, GroupDefinition, GroupIdentifier, NewGroup, StoredGroup,
};

#[derive(Subcommand)]
pub enum GroupsCommand {
    /// Add a group of patients: a member list (--member) or one criterion (--practitioner,
    /// --location or --period), resolved through the PMS whenever the group is used.
    Add(AddArgs),
    /// One line per group: id, name, identifier, definition.
    List,
    /// One group, with its members resolved now (criteria through the PMS).
    Show { id: String },
    /// Remove a group.
    Remove { id: String },
}

#[derive(clap::Args)]
#[command(group(
    ArgGroup::new("definition")
        .required(true)
        .args(["members", "practitioner", "location", "period"])
))]
pub struct AddArgs {
    /// The group's FHIR id (1 to 64 of A-Z a-z 0-9 - .).
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub name: String,
    /// `system|value`, or a value without a system.
    #[arg(long)]
    pub identifier: Option<String>,
    /// The group's patients: FHIR Patient ids (`7` or `Patient/7`); repeat or list several.
    #[arg(long = "member", num_args = 1..)]
    pub members: Vec<String>,
    /// Patients whose general practitioner is this Practitioner id.
    #[arg(long)]
    pub practitioner: Option<String>,
    /// Patients with an appointment at this Location id.
    #[arg(long)]
    pub location: Option<String>,
    /// Patients with an appointment in START..END (YYYY-MM-DD..YYYY-MM-DD, both days included).
    #[arg(long)]
    pub period: Option<String>,
}

/// `system|value` (the first `|` splits; an empty system is none) or a bare value.
fn parse_identifier(text: &str) -> GroupIdentifier {
    match text.split_once('|') {
        Some((system, value)) => GroupIdentifier {
            system: (!system.is_empty()).then(|| system.to_owned()),
            value: value.to_owned(),
        },
        None => GroupIdentifier {
            system: None,
            value: text.to_owned(),
        },
    }
}

/// A calendar day written exactly `YYYY-MM-DD`.
fn parse_day(text: &str) -> Option<NaiveDate> {
    let shaped = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    shaped
        .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .flatten()
}

/// `START..END`, two days.
fn parse_period(text: &str) -> anyhow::Result<(NaiveDate, NaiveDate)> {
    let (start, end) = text
        .split_once("..")
        .with_context(|| format!("--period {text:?}: write START..END (2024-01-01..2024-03-31)"))?;
    let day = |which: &str, value: &str| {
        parse_day(value).with_context(|| {
            format!("--period {text:?}: the {which} {value:?} is not a YYYY-MM-DD day")
        })
    };
    Ok((day("start", start)?, day("end", end)?))
}

/// `Type/id` or `id`: the id (operators copy references as often as ids).
fn id_of(resource_type: &str, text: &str) -> String {
    text.strip_prefix(resource_type)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(text)
        .to_owned()
}

/// The group `portico groups add` describes; the store checks the ids and the period's order.
fn new_group(args: AddArgs) -> anyhow::Result<NewGroup> {
    let definition = if let Some(practitioner) = &args.practitioner {
        GroupDefinition::Criterion(GroupCriterion::GeneralPractitioner(id_of(
            "Practitioner",
            practitioner,
        )))
    } else if let Some(location) = &args.location {
        GroupDefinition::Criterion(GroupCriterion::AppointmentLocation(id_of(
            "Location", location,
        )))
    } else if let Some(period) = &args.period {
        let (start, end) = parse_period(period)?;
        GroupDefinition::Criterion(GroupCriterion::AppointmentPeriod { start, end })
    } else {
        GroupDefinition::Members(
            args.members
                .iter()
                .map(|member| id_of("Patient", member))
                .collect(),
        )
    };
    Ok(NewGroup {
        id: args.id,
        name: args.name,
        identifier: args.identifier.as_deref().map(parse_identifier),
        definition,
    })
}

/// How a group is defined, in one line.
fn definition_text(group: &StoredGroup) -> String {
    match &group.definition {
        GroupDefinition::Members(patients) => format!("{} listed members", patients.len()),
        GroupDefinition::Criterion(GroupCriterion::GeneralPractitioner(id)) => {
            format!("patients whose general practitioner is Practitioner/{id}")
        }
        GroupDefinition::Criterion(GroupCriterion::AppointmentLocation(id)) => {
            format!("patients with an appointment at Location/{id}")
        }
        GroupDefinition::Criterion(GroupCriterion::AppointmentPeriod { start, end }) => {
            format!("patients with an appointment in {start}..{end}")
        }
    }
}

fn identifier_text(group: &StoredGroup) -> String {
    match &group.identifier {
        Some(GroupIdentifier {
            system: Some(system),
            value,
        }) => format!("{system}|{value}"),
        Some(GroupIdentifier {
            system: None,
            value,
        }) => value.clone(),
        None => "-".to_owned(),
    }
}

pub async fn run(config_file: Option<&Path>, command: GroupsCommand) -> anyhow::Result<()> {
    let store = open_store(config_file).await?;
    match command {
        GroupsCommand::Add(args) => {
            let group = store.add_group(&new_group(args)?).await?;
            println!("added group {}: {}", group.id, definition_text(&group));
        }
        GroupsCommand::List => {
            for group in store.groups().await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    group.id,
                    group.name,
                    identifier_text(&group),
                    definition_text(&group)
                );
            }
        }
        GroupsCommand::Show { id } => {
            let group = store
                .group(&id)
                .await?
                .with_context(|| format!("no group {id}"))?;
            println!(
                "id: {}\nname: {}\nidentifier: {}\ndefinition: {}\nupdated: {}",
                group.id,
                group.name,
                identifier_text(&group),
                definition_text(&group),
                time_ms(Some(group.updated_ms))
            );
            // A member list is what is stored; only a criterion needs the PMS.
            let members = match &group.definition {
                GroupDefinition::Members(patients) => patients.clone(),
                GroupDefinition::Criterion(_) => {
                    let repository = open_repository(config_file).await?;
                    crate::groups::members(&repository, &group)
                        .await
                        .with_context(|| format!("cannot resolve the members of group {id}"))?
                }
            };
            println!("members: {}", members.len());
            for patient in members {
                println!("Patient/{patient}");
            }
        }
        GroupsCommand::Remove { id } => {
            if !store.remove_group(&id).await? {
                anyhow::bail!("no group {id}");
            }
            println!("removed group {id}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: GroupsCommand,
    }

    /// `portico groups <args>` as the command line parses and `add` reads it.
    fn added(args: &[&str]) -> anyhow::Result<NewGroup> {
        let cli = Cli::try_parse_from(["groups", "add"].iter().chain(args))?;
        let GroupsCommand::Add(add) = cli.command else {
            unreachable!("an add command");
        };
        new_group(add)
    }

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn each_definition_is_read_from_its_option() {
        let base = ["--id", "g1", "--name", "Cohort"];
        let with = |more: &[&str]| added(&[&base[..], more].concat()).unwrap();
        assert_eq!(
            with(&["--member", "7", "Patient/12", "--member", "3"]).definition,
            GroupDefinition::Members(vec!["7".into(), "12".into(), "3".into()])
        );
        assert_eq!(
            with(&["--practitioner", "Practitioner/4"]).definition,
            GroupDefinition::Criterion(GroupCriterion::GeneralPractitioner("4".into()))
        );
        assert_eq!(
            with(&["--location", "3"]).definition,
            GroupDefinition::Criterion(GroupCriterion::AppointmentLocation("3".into()))
        );
        assert_eq!(
            with(&["--period", "2024-01-01..2024-03-31"]).definition,
            GroupDefinition::Criterion(GroupCriterion::AppointmentPeriod {
                start: day("2024-01-01"),
                end: day("2024-03-31"),
            })
        );
        let identified = with(&["--member", "1", "--identifier", "urn:example:cohorts|D|24"]);
        assert_eq!(
            identified.identifier,
            Some(GroupIdentifier {
                system: Some("urn:example:cohorts".into()),
                value: "D|24".into(),
            })
        );
        assert_eq!(
            with(&["--member", "1", "--identifier", "D-24"]).identifier,
            Some(GroupIdentifier {
                system: None,
                value: "D-24".into(),
            })
        );
        assert_eq!(
            with(&["--member", "1", "--identifier", "|D-24"])
                .identifier
                .unwrap()
                .system,
            None
        );
    }

    #[test]
    fn exactly_one_definition_is_required() {
        let base = ["--id", "g1", "--name", "Cohort"];
        for wrong in [
            &[][..],
            &["--member", "1", "--location", "3"][..],
            &["--practitioner", "4", "--period", "2024-01-01..2024-01-02"][..],
            &["--member"][..],
        ] {
            assert!(added(&[&base[..], wrong].concat()).is_err(), "{wrong:?}");
        }
    }

    #[test]
    fn periods_are_two_exact_days() {
        assert_eq!(
            parse_period("2024-02-29..2024-02-29").unwrap(),
            (day("2024-02-29"), day("2024-02-29"))
        );
        for bad in [
            "2024-01-01",
            "2024-01-01...2024-02-01",
            "2024-1-01..2024-02-01",
            "2023-02-29..2023-03-01",
            "2024-01-01..",
            "..2024-01-01",
            "2024-01-01T00:00..2024-01-02",
            " 2024-01-01..2024-01-02",
        ] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
        // The order is the store's to check, with every other problem of the group.
        assert!(parse_period("2024-03-01..2024-01-01").is_ok());
    }
}
