//! Exact-SQL tests of the shared renderer and each dialect's differences.

use super::ast::{CmpOp, Cond, Expr, Join, JoinKind, LikeMode, OrderTerm, Select, TableRef, Value};
use super::{DialectKind, render};

fn sample() -> Select {
    Select {
        columns: vec![Expr::column("t", "pid"), Expr::column("m", "title")],
        from: TableRef {
            table: "patient_data".into(),
            alias: "t".into(),
        },
        joins: vec![Join {
            kind: JoinKind::Left,
            table: TableRef {
                table: "list_options".into(),
                alias: "m".into(),
            },
            on: Cond::and(vec![
                Cond::Compare {
                    left: Expr::column("m", "option_id"),
                    op: CmpOp::Eq,
                    right: Expr::column("t", "status"),
                },
                Cond::compare(
                    Expr::column("m", "list_id"),
                    CmpOp::Eq,
                    Value::Text("marital".into()),
                ),
            ]),
            cached: None,
        }],
        filter: Cond::and(vec![
            Cond::Like {
                expr: Expr::column("t", "lname"),
                text: "MÜ'l%_!".into(),
                mode: LikeMode::StartsWith,
            },
            Cond::In {
                expr: Expr::column("t", "sex"),
                values: vec![Value::Text("Female".into())],
                negated: false,
            },
            Cond::ExactText {
                expr: Expr::column("t", "fname"),
                text: "Ann".into(),
            },
        ]),
        order_by: vec![OrderTerm {
            expr: Expr::column("t", "pid"),
            descending: true,
        }],
        limit: Some(21),
        fixed_join_order: false,
    }
}

#[test]
fn mysql_renders_backticks_question_marks_and_binary_exact_match() {
    let query = render(DialectKind::Mysql, &sample());
    assert_eq!(
        query.sql,
        "SELECT `t`.`pid`, `m`.`title` FROM `patient_data` `t` LEFT JOIN `list_options` `m` ON \
         (`m`.`option_id` = `t`.`status` AND `m`.`list_id` = ?) WHERE (`t`.`lname` LIKE ? ESCAPE '!' \
         AND `t`.`sex` IN (?) AND (`t`.`fname` = ? AND BINARY `t`.`fname` = BINARY ?)) \
         ORDER BY `t`.`pid` DESC LIMIT 21"
    );
    assert_eq!(
        query.params,
        vec![
            Value::Text("marital".into()),
            Value::Text("MÜ'l!%!_!!%".into()),
            Value::Text("Female".into()),
            Value::Text("Ann".into()),
            Value::Text("Ann".into()),
        ]
    );
}

#[test]
fn a_fixed_join_order_is_straight_join_on_mysql_and_nothing_elsewhere() {
    let fixed = Select {
        fixed_join_order: true,
        ..sample()
    };
    let mysql = render(DialectKind::Mysql, &fixed).sql;
    assert!(
        mysql.starts_with("SELECT STRAIGHT_JOIN `t`.`pid`, "),
        "{mysql}"
    );
    for dialect in [DialectKind::Sqlite, DialectKind::Mssql] {
        assert_eq!(render(dialect, &fixed), render(dialect, &sample()));
    }
    // A single table has no join order to fix.
    let alone = Select {
        joins: Vec::new(),
        ..fixed
    };
    assert!(
        render(DialectKind::Mysql, &alone)
            .sql
            .starts_with("SELECT `t`.`pid`")
    );
}

#[test]
fn sqlite_renders_double_quotes_numbered_placeholders_and_folded_matches() {
    let query = render(DialectKind::Sqlite, &sample());
    assert_eq!(
        query.sql,
        "SELECT \"t\".\"pid\", \"m\".\"title\" FROM \"patient_data\" \"t\" LEFT JOIN \"list_options\" \"m\" ON \
         (\"m\".\"option_id\" = \"t\".\"status\" AND \"m\".\"list_id\" = ?1) WHERE (portico_fold(\"t\".\"lname\") LIKE ?2 ESCAPE '!' \
         AND \"t\".\"sex\" IN (?3) AND \"t\".\"fname\" = ?4) ORDER BY \"t\".\"pid\" DESC LIMIT 21"
    );
    // The value is folded, then escaped.
    assert_eq!(query.params[1], Value::Text("mu'l!%!_!!%".into()));
    assert_eq!(query.params.len(), 4);
}

#[test]
fn tsql_renders_brackets_named_placeholders_top_and_collations() {
    let query = render(DialectKind::Mssql, &sample());
    assert_eq!(
        query.sql,
        "SELECT TOP 21 [t].[pid], [m].[title] FROM [patient_data] [t] LEFT JOIN [list_options] [m] ON \
         ([m].[option_id] = [t].[status] AND [m].[list_id] = @P1) WHERE ([t].[lname] LIKE @P2 \
         COLLATE Latin1_General_100_CI_AI ESCAPE '!' AND [t].[sex] IN (@P3) AND ([t].[fname] = @P4 \
         AND [t].[fname] = @P5 COLLATE Latin1_General_BIN2)) ORDER BY [t].[pid] DESC"
    );
    // The collation decides; the value is bound as typed.
    assert_eq!(query.params[1], Value::Text("MÜ'l!%!_!!%".into()));
    assert_eq!(query.params.len(), 5);
    assert_eq!(super::quote_ident(DialectKind::Mssql, "End]"), "[End]]]");
}

#[test]
fn quoting_doubles_embedded_quote_characters() {
    assert_eq!(super::quote_ident(DialectKind::Mysql, "a`b"), "`a``b`");
    assert_eq!(
        super::quote_ident(DialectKind::Sqlite, "a\"b"),
        "\"a\"\"b\""
    );
}

#[test]
fn empty_in_lists_render_as_constants() {
    let select = Select {
        columns: vec![Expr::CountWhere(vec![Cond::True, Cond::False])],
        from: TableRef {
            table: "x".into(),
            alias: "t".into(),
        },
        joins: vec![],
        filter: Cond::Or(vec![
            Cond::In {
                expr: Expr::column("t", "a"),
                values: vec![],
                negated: false,
            },
            Cond::In {
                expr: Expr::column("t", "a"),
                values: vec![],
                negated: true,
            },
        ]),
        order_by: vec![],
        limit: None,
        fixed_join_order: false,
    };
    assert_eq!(
        render(DialectKind::Sqlite, &select).sql,
        "SELECT SUM(CASE WHEN 1 = 1 THEN 1 ELSE 0 END + CASE WHEN 1 = 0 THEN 1 ELSE 0 END) FROM \"x\" \"t\" \
         WHERE (1 = 0 OR 1 = 1)"
    );
}

#[test]
fn constant_folding_keeps_trees_small() {
    assert_eq!(Cond::and(vec![Cond::True, Cond::True]), Cond::True);
    assert_eq!(Cond::and(vec![Cond::True, Cond::False]), Cond::False);
    assert_eq!(Cond::or(vec![Cond::False, Cond::False]), Cond::False);
    assert_eq!(Cond::or(vec![Cond::False, Cond::True]), Cond::True);
    assert_eq!(Cond::negate(Cond::negate(Cond::False)), Cond::False);
    let dated = Cond::IsNull {
        expr: Expr::column("t", "date"),
        negated: true,
    };
    assert_eq!(Cond::and(vec![dated.clone(), dated.clone()]), dated);
    // An OR flattens, but keeps its alternatives as given (no quadratic scan of long id lists).
    let undated = Cond::negate(dated.clone());
    assert_eq!(
        Cond::or(vec![dated.clone(), Cond::Or(vec![undated.clone()])]),
        Cond::Or(vec![dated.clone(), undated])
    );
}

#[test]
fn a_case_reads_its_column_only_where_its_condition_holds() {
    let select = Select {
        columns: vec![Expr::Case {
            when: Box::new(Cond::In {
                expr: Expr::column("t", "status"),
                values: vec![Value::Int(1), Value::Int(2)],
                negated: false,
            }),
            then: Box::new(Expr::column("t", "start")),
        }],
        from: TableRef {
            table: "appointment".into(),
            alias: "t".into(),
        },
        joins: vec![],
        filter: Cond::True,
        order_by: vec![],
        limit: None,
        fixed_join_order: false,
    };
    let query = render(DialectKind::Mssql, &select);
    assert_eq!(
        query.sql,
        "SELECT CASE WHEN [t].[status] IN (@P1, @P2) THEN [t].[start] END FROM [appointment] [t]"
    );
    assert_eq!(query.params, vec![Value::Int(1), Value::Int(2)]);
}

#[test]
fn reads_only_sees_every_column_and_refuses_subqueries() {
    let on_t = Cond::compare(Expr::column("t", "a"), CmpOp::Eq, Value::Int(1));
    let on_slot = Cond::IsNull {
        expr: Expr::column("slot", "b"),
        negated: true,
    };
    assert!(on_t.reads_only("t"));
    assert!(!Cond::and(vec![on_t.clone(), on_slot.clone()]).reads_only("t"));
    assert!(Cond::negate(on_slot.clone()).reads_only("slot"));
    let case = Expr::Case {
        when: Box::new(on_slot),
        then: Box::new(Expr::column("t", "c")),
    };
    assert!(!case.reads_only("t"));
    let exists = Cond::Exists {
        select: Box::new(Select {
            columns: vec![Expr::Value(Value::Int(1))],
            from: TableRef {
                table: "x".into(),
                alias: "t".into(),
            },
            joins: vec![],
            filter: on_t,
            order_by: vec![],
            limit: None,
            fixed_join_order: false,
        }),
        negated: false,
    };
    assert!(!exists.reads_only("t"));
}

#[test]
fn map_exprs_reaches_every_tested_expression_but_not_subqueries() {
    let onto_t = |expr: Expr| match expr {
        Expr::Column { table, column } if table == "slot" => Expr::Column {
            table: "t".into(),
            column,
        },
        other => other,
    };
    let on_slot = Cond::Not(Box::new(Cond::Or(vec![
        Cond::compare(Expr::column("slot", "a"), CmpOp::Gt, Value::Int(1)),
        Cond::Like {
            expr: Expr::column("slot", "b"),
            text: "x".into(),
            mode: LikeMode::StartsWith,
        },
    ])));
    let on_t = on_slot.map_exprs(&onto_t);
    assert!(on_t.reads_only("t"));
    assert!(!on_t.reads("slot"));
}
