//! `/console/projects/{projectId}/rules`: the rule set as forms (one fieldset per metric, streak,
//! achievement, points system with its triggers and levels, leaderboard) and as JSON, each error
//! of the parser placed on the field it names; a preview of what the draft would award on recent
//! events; publishing from now on or with a replay whose progress the page follows; the version
//! history with each version's changes. Who may call: any member reads; preview and publish need
//! the developer role (`rules:write`), as on `/v1/projects/{id}/rules`.

use std::collections::BTreeMap;

use askama::Template;
use axum::{Router, body::Bytes, extract::State, response::Response, routing::get};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    console::{
        layout::{Nav, render},
        rules_form::{self, Kind, SECTIONS},
        viewer::Viewer,
    },
    http::{
        error::{Error, Result},
        extract::{Json, Path},
    },
    manage::rules::{self, Apply, PreviewRules, PublishRules, VersionOut},
    state::AppState,
};

const PREVIEW_EVENTS: u32 = 1000;

pub struct FieldView {
    pub name: String,
    pub id: String,
    pub label: &'static str,
    pub number: bool,
    pub options: &'static [&'static str],
    pub value: String,
    pub error: Option<String>,
}

pub struct ItemView {
    pub path: String,
    pub id: String,
    pub fields: Vec<FieldView>,
    pub lists: Vec<ListView>,
    pub error: Option<String>,
}

pub struct ListView {
    pub path: String,
    pub title: &'static str,
    pub singular: &'static str,
    pub items: Vec<ItemView>,
    pub error: Option<String>,
}

impl ListView {
    fn heading_id(&self) -> String {
        format!("{}-heading", dom_id(&self.path))
    }
}

pub struct PreviewView {
    pub events_evaluated: usize,
    pub rows: Vec<(String, Uuid, String)>,
    pub users: usize,
}

#[derive(Template)]
#[template(path = "rules_editor.html")]
pub struct Editor {
    project_id: Uuid,
    can_write: bool,
    timezone: FieldView,
    lists: Vec<ListView>,
    json: String,
    json_error: Option<String>,
    problems: Vec<(String, String)>,
    preview: Option<PreviewView>,
    published: Option<(i32, &'static str)>,
    note: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "rules.html")]
struct RulesPage {
    nav: Nav,
    project_id: Uuid,
    active: Option<(i32, String)>,
    versions: Vec<VersionOut>,
    editor: Editor,
}

#[derive(Template)]
#[template(path = "rules_version.html")]
struct VersionPage {
    nav: Nav,
    project_id: Uuid,
    version: VersionOut,
    previous: Option<i32>,
    diff: Vec<(char, String)>,
}

#[derive(Template)]
#[template(path = "rules_progress.html")]
struct ProgressFragment {
    project_id: Uuid,
    version: VersionOut,
}

fn dom_id(path: &str) -> String {
    let mut id = String::from("f");
    for c in path.chars() {
        id.push(if c.is_ascii_alphanumeric() { c } else { '-' });
    }
    id
}

fn titles(list: &str) -> (&'static str, &'static str) {
    match list {
        "metrics" => ("Metrics", "metric"),
        "streaks" => ("Streaks", "streak"),
        "achievements" => ("Achievements", "achievement"),
        "points" => ("Points and levels", "points system"),
        "leaderboards" => ("Leaderboards", "leaderboard"),
        "triggers" => ("Triggers", "trigger"),
        "levels" => ("Levels", "level"),
        _ => ("", ""),
    }
}

fn list_view(
    list: &'static str,
    path: String,
    items: Option<&Value>,
    errors: &mut BTreeMap<String, String>,
) -> ListView {
    let (title, singular) = titles(list);
    let items = items.and_then(Value::as_array).cloned().unwrap_or_default();
    let error = errors.remove(&path);
    let items = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let item_path = format!("{path}[{index}]");
            let fields = rules_form::item_specs(list)
                .iter()
                .map(|spec| {
                    let name = format!("{item_path}.{}", spec.name);
                    FieldView {
                        id: dom_id(&name),
                        error: errors.remove(&name),
                        label: spec.label,
                        number: matches!(spec.kind, Kind::Number),
                        options: match spec.kind {
                            Kind::Choice(options) => options,
                            _ => &[],
                        },
                        value: rules_form::text_at(item, spec.name),
                        name,
                    }
                })
                .collect();
            let lists = if list == "points" {
                ["triggers", "levels"]
                    .into_iter()
                    .map(|sub| list_view(sub, format!("{item_path}.{sub}"), item.get(sub), errors))
                    .collect()
            } else {
                Vec::new()
            };
            ItemView {
                id: dom_id(&item_path),
                error: errors.remove(&item_path),
                path: item_path,
                fields,
                lists,
            }
        })
        .collect();
    ListView {
        path,
        title,
        singular,
        items,
        error,
    }
}

impl Editor {
    fn new(
        project_id: Uuid,
        can_write: bool,
        document: &Value,
        problems: Vec<(String, String)>,
    ) -> Editor {
        let mut errors: BTreeMap<String, String> = BTreeMap::new();
        for (path, message) in &problems {
            errors
                .entry(path.clone())
                .and_modify(|known| {
                    known.push_str("; ");
                    known.push_str(message);
                })
                .or_insert_with(|| message.clone());
        }
        let timezone = FieldView {
            name: "$.timezone".to_owned(),
            id: dom_id("$.timezone"),
            label: "Time zone (IANA, e.g. Europe/Berlin)",
            number: false,
            options: &[],
            value: rules_form::text_at(document, "timezone"),
            error: errors.remove("$.timezone"),
        };
        let lists = SECTIONS
            .into_iter()
            .map(|list| list_view(list, format!("$.{list}"), document.get(list), &mut errors))
            .collect();
        Editor {
            project_id,
            can_write,
            timezone,
            lists,
            json: serde_json::to_string_pretty(document).unwrap_or_default(),
            json_error: None,
            // What no field shows (a whole document's problem) is listed above the form.
            problems: errors.into_iter().collect(),
            preview: None,
            published: None,
            note: None,
        }
    }
}

/// The problems a refused document comes back with (`details.errors[{path, message}]`).
fn problems_of(error: &Error) -> Option<Vec<(String, String)>> {
    let Error::InvalidRequest { message, details } = error else {
        return None;
    };
    let listed: Vec<(String, String)> = details
        .as_ref()
        .and_then(|d| d.get("errors"))
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    let text = |k: &str| {
                        e.get(k)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    (text("path"), text("message"))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(if listed.is_empty() {
        vec![("$".to_owned(), message.clone())]
    } else {
        listed
    })
}

fn empty_rules() -> Value {
    let mut rules = serde_json::json!({ "timezone": "UTC" });
    for list in SECTIONS {
        rules[list] = Value::Array(Vec::new());
    }
    rules
}

async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
) -> Result<Response> {
    let nav = Nav::project(&state, &viewer, project_id, "rules", "Rules").await?;
    let (active, document) = match rules::get_rules(
        viewer.caller.clone(),
        State(state.clone()),
        Path(project_id),
    )
    .await
    {
        Ok(active) => (
            Some((active.0.version, active.0.apply.as_str().to_owned())),
            active.0.rules,
        ),
        Err(Error::NotFound(_)) => (None, empty_rules()),
        Err(error) => return Err(error),
    };
    let versions = rules::list_versions(
        viewer.caller.clone(),
        State(state.clone()),
        Path(project_id),
    )
    .await?
    .0
    .data;
    let can_write = nav.can("rules");
    render(&RulesPage {
        nav,
        project_id,
        active,
        versions,
        editor: Editor::new(project_id, can_write, &document, Vec::new()),
    })
}

/// What the editor's forms send: the draft (as fields, or as JSON) and what to do with it.
struct Submission {
    document: std::result::Result<Value, String>,
    action: String,
    apply: Apply,
    preview_user: Option<String>,
}

fn read_submission(body: &[u8]) -> Submission {
    let mut fields = Vec::new();
    let mut json = None;
    let mut action = String::from("validate");
    let mut apply = Apply::FromNow;
    let mut preview_user = None;
    for (name, value) in url::form_urlencoded::parse(body) {
        match name.as_ref() {
            "document" => json = Some(value.into_owned()),
            "action" => action = value.into_owned(),
            "apply" => {
                apply = if value == "replay" {
                    Apply::Replay
                } else {
                    Apply::FromNow
                }
            }
            "previewUser" => {
                preview_user = Some(value.trim().to_owned()).filter(|u| !u.is_empty());
            }
            _ => fields.push((name.into_owned(), value.into_owned())),
        }
    }
    let document = match json {
        Some(text) => serde_json::from_str(&text).map_err(|error| error.to_string()),
        None => Ok(rules_form::document(&fields)),
    };
    Submission {
        document,
        action,
        apply,
        preview_user,
    }
}

async fn edit(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(project_id): Path<Uuid>,
    body: Bytes,
) -> Result<Response> {
    let (_, grant) = viewer
        .caller
        .authorize_project(&state, project_id, crate::accounts::roles::Permission::Read)
        .await?;
    let can_write = grant
        .role
        .is_some_and(|role| role.allows(crate::accounts::roles::Permission::RulesWrite));
    let submission = read_submission(&body);
    let mut document = match submission.document {
        Ok(document) => document,
        Err(problem) => {
            let mut editor = Editor::new(project_id, can_write, &empty_rules(), Vec::new());
            editor.json = url::form_urlencoded::parse(&body)
                .find(|(name, _)| name == "document")
                .map(|(_, text)| text.into_owned())
                .unwrap_or_default();
            editor.json_error = Some(format!("This is not JSON: {problem}"));
            return render(&editor);
        }
    };
    let action = submission.action.as_str();
    if let Some(list) = action.strip_prefix("add:") {
        rules_form::add_item(&mut document, list);
        return render(&Editor::new(project_id, can_write, &document, Vec::new()));
    }
    if let Some(item) = action.strip_prefix("remove:") {
        rules_form::remove_item(&mut document, item);
        return render(&Editor::new(project_id, can_write, &document, Vec::new()));
    }
    match action {
        "preview" => {
            let previewed = rules::preview(
                viewer.caller.clone(),
                State(state.clone()),
                Path(project_id),
                Json(PreviewRules {
                    rules: document.clone(),
                    user_id: submission.preview_user,
                    limit: Some(PREVIEW_EVENTS),
                }),
            )
            .await;
            match previewed {
                Ok(preview) => {
                    let preview = preview.0;
                    let rows = preview
                        .awards
                        .iter()
                        .flat_map(|event| {
                            event.awards.iter().map(|award| {
                                (
                                    event.user_id.clone(),
                                    event.event_id,
                                    serde_json::to_string(award).unwrap_or_default(),
                                )
                            })
                        })
                        .collect();
                    let mut editor = Editor::new(project_id, can_write, &document, Vec::new());
                    editor.preview = Some(PreviewView {
                        events_evaluated: preview.events_evaluated,
                        users: preview.users.len(),
                        rows,
                    });
                    render(&editor)
                }
                Err(error) => match problems_of(&error) {
                    Some(problems) => {
                        render(&Editor::new(project_id, can_write, &document, problems))
                    }
                    None => Err(error),
                },
            }
        }
        "publish" => {
            let published = rules::put_rules(
                viewer.caller.clone(),
                State(state.clone()),
                Path(project_id),
                Json(PublishRules {
                    rules: document.clone(),
                    apply: submission.apply,
                }),
            )
            .await;
            match published {
                Ok((_, out)) => {
                    let mut editor = Editor::new(project_id, can_write, &document, Vec::new());
                    editor.published = Some((out.0.version, out.0.apply.as_str()));
                    render(&editor)
                }
                Err(error) => match problems_of(&error) {
                    Some(problems) => {
                        render(&Editor::new(project_id, can_write, &document, problems))
                    }
                    None => Err(error),
                },
            }
        }
        _ => {
            // Validation is the parser every publication goes through.
            let problems = match gamify_rules::Rules::parse(&document) {
                Ok(_) => Vec::new(),
                Err(errors) => errors.into_iter().map(|e| (e.path, e.message)).collect(),
            };
            let mut editor = Editor::new(project_id, can_write, &document, problems);
            if editor.problems.is_empty() && editor_is_clean(&editor) {
                editor.note = Some("The draft is valid.");
            }
            render(&editor)
        }
    }
}

fn editor_is_clean(editor: &Editor) -> bool {
    fn list_clean(list: &ListView) -> bool {
        list.error.is_none()
            && list.items.iter().all(|item| {
                item.error.is_none()
                    && item.fields.iter().all(|f| f.error.is_none())
                    && item.lists.iter().all(list_clean)
            })
    }
    editor.timezone.error.is_none() && editor.lists.iter().all(list_clean)
}

async fn version(
    viewer: Viewer,
    State(state): State<AppState>,
    Path((project_id, number)): Path<(Uuid, i32)>,
) -> Result<Response> {
    let nav = Nav::project(&state, &viewer, project_id, "rules", "Rules version").await?;
    let version = rules::get_version(
        viewer.caller.clone(),
        State(state.clone()),
        Path((project_id, number)),
    )
    .await?
    .0;
    let this = rules::version_document(&state, project_id, number)
        .await?
        .unwrap_or(Value::Null);
    let previous_number = (number > 1).then_some(number - 1);
    let previous = match previous_number {
        Some(previous) => rules::version_document(&state, project_id, previous).await?,
        None => None,
    };
    let before = previous
        .as_ref()
        .map(|doc| serde_json::to_string_pretty(doc).unwrap_or_default())
        .unwrap_or_default();
    let after = serde_json::to_string_pretty(&this).unwrap_or_default();
    let diff = similar::TextDiff::from_lines(&before, &after)
        .iter_all_changes()
        .map(|change| {
            let sign = match change.tag() {
                similar::ChangeTag::Delete => '-',
                similar::ChangeTag::Insert => '+',
                similar::ChangeTag::Equal => ' ',
            };
            (sign, change.value().trim_end_matches('\n').to_owned())
        })
        .collect();
    render(&VersionPage {
        nav,
        project_id,
        version,
        previous: previous_number,
        diff,
    })
}

/// The state of a version being replayed; polled by the page until it is no longer replaying.
async fn progress(
    viewer: Viewer,
    State(state): State<AppState>,
    Path((project_id, number)): Path<(Uuid, i32)>,
) -> Result<Response> {
    let version = rules::get_version(viewer.caller, State(state), Path((project_id, number)))
        .await?
        .0;
    render(&ProgressFragment {
        project_id,
        version,
    })
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/projects/{project_id}/rules", get(page).post(edit))
        .route(
            "/console/projects/{project_id}/rules/versions/{version}",
            get(version),
        )
        .route(
            "/console/projects/{project_id}/rules/versions/{version}/progress",
            get(progress),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_parser_error_is_placed_on_the_field_it_names_and_the_rest_listed() {
        let document = serde_json::json!({
            "timezone": "Mars/Olympus",
            "metrics": [{ "key": "purchases", "event": "purchase", "aggregate": "count" }],
            "achievements": [{ "key": "a", "name": "A", "metric": "nope", "threshold": 1 }],
            "streaks": [], "points": [], "leaderboards": []
        });
        let problems = match gamify_rules::Rules::parse(&document) {
            Ok(_) => panic!("the document should be refused"),
            Err(errors) => errors
                .into_iter()
                .map(|e| (e.path, e.message))
                .collect::<Vec<_>>(),
        };
        let editor = Editor::new(Uuid::nil(), true, &document, problems.clone());
        assert!(editor.timezone.error.is_some(), "{problems:?}");
        let achievements = editor
            .lists
            .iter()
            .find(|l| l.path == "$.achievements")
            .unwrap();
        let metric = achievements.items[0]
            .fields
            .iter()
            .find(|f| f.name == "$.achievements[0].metric")
            .unwrap();
        assert!(metric.error.is_some(), "{problems:?}");
        assert!(!editor_is_clean(&editor));
    }

    #[test]
    fn the_json_view_and_the_action_are_read_from_the_submission() {
        let submission = read_submission(
            b"document=%7B%22timezone%22%3A%22UTC%22%7D&action=publish&apply=replay",
        );
        assert_eq!(submission.document.unwrap()["timezone"], "UTC");
        assert_eq!(submission.action, "publish");
        assert_eq!(submission.apply, Apply::Replay);
        let broken = read_submission(b"document=%7B&action=validate");
        assert!(broken.document.is_err());
        let form = read_submission(b"%24.metrics%5B0%5D.key=a&action=add%3A%24.metrics");
        assert_eq!(form.document.unwrap()["metrics"][0]["key"], "a");
        assert_eq!(form.action, "add:$.metrics");
    }
}
