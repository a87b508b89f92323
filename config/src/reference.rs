//! The configuration reference, `docs/configuration.md`, generated from the doc comments of
//! the config types in `model.rs` (their declaration order, types and serde attributes), so
//! it cannot drift from the code: the test below fails when the file and the types disagree,
//! and `QUIVER_BLESS=1 cargo test --release --workspace reference` rewrites the file.

use std::collections::HashMap;
use std::fmt::Write;

use syn::{Attribute, Fields, Item, Type};

const MODEL: &str = include_str!("model.rs");

/// A struct or enum of `model.rs`, as the reference shows it.
enum Shape {
    Struct {
        doc: String,
        /// Every field may be left out (`#[serde(default)]` on the struct).
        defaulted: bool,
        fields: Vec<FieldDoc>,
    },
    Enum {
        variants: Vec<(String, String)>,
    },
}

struct FieldDoc {
    name: String,
    doc: String,
    ty: Type,
    /// `#[serde(default…)]` on the field.
    defaulted: bool,
}

/// The text of `///` comments, joined into one paragraph.
fn doc(attrs: &[Attribute]) -> String {
    attrs
        .iter()
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) if nv.path.is_ident("doc") => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value().trim().to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a `#[serde(…)]` attribute among `attrs` contains `word` (e.g. `default`).
fn serde_has(attrs: &[Attribute], word: &str) -> bool {
    attrs.iter().any(|a| match &a.meta {
        syn::Meta::List(list) if list.path.is_ident("serde") => list
            .tokens
            .to_string()
            .split(|c: char| !c.is_alphanumeric() && c != '_')
            .any(|w| w == word),
        _ => false,
    })
}

fn shapes() -> HashMap<String, Shape> {
    let file = syn::parse_file(MODEL).expect("model.rs parses");
    let mut shapes = HashMap::new();
    for item in file.items {
        match item {
            Item::Struct(s) => {
                let Fields::Named(named) = s.fields else {
                    continue;
                };
                let fields = named
                    .named
                    .into_iter()
                    .map(|f| FieldDoc {
                        name: f.ident.expect("named").to_string(),
                        doc: doc(&f.attrs),
                        defaulted: serde_has(&f.attrs, "default"),
                        ty: f.ty,
                    })
                    .collect();
                shapes.insert(
                    s.ident.to_string(),
                    Shape::Struct {
                        doc: doc(&s.attrs),
                        defaulted: serde_has(&s.attrs, "default"),
                        fields,
                    },
                );
            }
            Item::Enum(e) => {
                let lowercase = serde_has(&e.attrs, "lowercase");
                let variants = e
                    .variants
                    .iter()
                    .map(|v| {
                        let name = v.ident.to_string();
                        let name = if lowercase { name.to_lowercase() } else { name };
                        (name, doc(&v.attrs))
                    })
                    .collect();
                shapes.insert(e.ident.to_string(), Shape::Enum { variants });
            }
            _ => {}
        }
    }
    shapes
}

/// The last path segment of `ty` and its generic arguments.
fn segment(ty: &Type) -> (String, Vec<Type>) {
    let Type::Path(path) = ty else {
        return (String::new(), Vec::new());
    };
    let last = path.path.segments.last().expect("a type name");
    let args = match &last.arguments {
        syn::PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|a| match a {
                syn::GenericArgument::Type(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    (last.ident.to_string(), args)
}

struct Reference {
    shapes: HashMap<String, Shape>,
    out: String,
}

impl Reference {
    /// How a value of `ty` is written, and the struct it holds (for its own rows), if any.
    fn kind(&self, ty: &Type) -> (String, Option<String>) {
        let (name, args) = segment(ty);
        match name.as_str() {
            "Option" => self.kind(&args[0]),
            "Vec" => {
                let (inner, shape) = self.kind(&args[0]);
                (format!("list of {inner}"), shape)
            }
            "BTreeMap" | "Map" => ("map".into(), None),
            "String" => ("text".into(), None),
            "bool" => ("`true` or `false`".into(), None),
            "usize" | "u64" | "u32" => ("integer".into(), None),
            "f64" => ("number".into(), None),
            "Duration" => ("duration (`30s`, `5m`, `12h`)".into(), None),
            "ByteSize" => ("size (`64 MiB`, `2 GiB`)".into(), None),
            "SocketAddr" => ("`host:port`".into(), None),
            "PathBuf" => ("path".into(), None),
            other => match self.shapes.get(other) {
                Some(Shape::Enum { variants }) => (
                    variants
                        .iter()
                        .map(|(v, _)| format!("`{v}`"))
                        .collect::<Vec<_>>()
                        .join(" · "),
                    None,
                ),
                Some(Shape::Struct { .. }) => ("section".into(), Some(other.to_string())),
                None => panic!("the reference does not know type `{other}`: add it to `kind`"),
            },
        }
    }

    /// One row per key of struct `shape` under `prefix`, nested sections included.
    fn rows(&mut self, prefix: &str, shape: &str) {
        let Some(Shape::Struct {
            defaulted, fields, ..
        }) = self.shapes.get(shape)
        else {
            unreachable!("{shape} is a struct");
        };
        let container_default = *defaulted;
        let fields: Vec<(String, String, Type, bool)> = fields
            .iter()
            .map(|f| (f.name.clone(), f.doc.clone(), f.ty.clone(), f.defaulted))
            .collect();
        for (name, doc, ty, defaulted) in fields {
            let (kind, nested) = self.kind(&ty);
            let optional = container_default || defaulted || segment(&ty).0 == "Option";
            let list = segment(&ty).0 == "Vec";
            let key = format!("{prefix}{name}");
            let required = if optional { "" } else { " **(required)**" };
            let kind = match &nested {
                Some(_) if list => "list of entries".to_string(),
                _ => kind,
            };
            let enum_docs = self.enum_docs(&ty);
            writeln!(
                self.out,
                "| `{key}` | {kind}{required} | {}{enum_docs} |",
                doc.replace('|', "\\|")
            )
            .unwrap();
            if let Some(nested) = nested {
                let prefix = if list {
                    format!("{key}[].")
                } else {
                    format!("{key}.")
                };
                self.rows(&prefix, &nested);
            }
        }
    }

    /// The meaning of each value of an enum-typed field.
    fn enum_docs(&self, ty: &Type) -> String {
        let (name, args) = segment(ty);
        let name = if name == "Option" {
            segment(&args[0]).0
        } else {
            name
        };
        match self.shapes.get(&name) {
            Some(Shape::Enum { variants }) => variants
                .iter()
                .map(|(v, d)| format!(" `{v}`: {d}"))
                .collect(),
            _ => String::new(),
        }
    }
}

/// The whole reference, as `docs/configuration.md` holds it.
fn render() -> String {
    let shapes = shapes();
    let mut reference = Reference {
        shapes,
        out: String::new(),
    };
    reference.out.push_str(
        "# Configuration reference\n\n\
         <!-- Generated from the doc comments of config/src/model.rs by config/src/reference.rs;\n     \
         `QUIVER_BLESS=1 cargo test --release --workspace reference` rewrites it. Do not edit. -->\n\n\
         Every key of `quiver.yaml`, section by section. Every key may be left out unless marked\n\
         **(required)** (then only within its optional section); values may use `${VAR}`,\n\
         `${VAR:-default}` and `${VAR:?message}`; unknown keys are errors.\n\
         `quiver check-config --config FILE` checks a file and prints every problem at once.\n",
    );
    let Some(Shape::Struct { fields, .. }) = reference.shapes.get("Config") else {
        unreachable!("Config is a struct");
    };
    let sections: Vec<(String, Type)> = fields
        .iter()
        .map(|f| (f.name.clone(), f.ty.clone()))
        .collect();
    for (section, ty) in sections {
        let (_, nested) = reference.kind(&ty);
        let nested = nested.expect("every section is a struct");
        let Some(Shape::Struct { doc, .. }) = reference.shapes.get(&nested) else {
            unreachable!()
        };
        let doc = doc.clone();
        let list = segment(&ty).0 == "Vec";
        write!(
            reference.out,
            "\n## `{section}`\n\n{doc}\n\n| key | value | meaning |\n| --- | --- | --- |\n"
        )
        .unwrap();
        let prefix = if list {
            format!("{section}[].")
        } else {
            format!("{section}.")
        };
        reference.rows(&prefix, &nested);
    }
    reference.out
}

#[test]
fn the_reference_matches_the_config_types() {
    // Found at run time (cargo runs tests in the crate's folder): a test binary reused by a
    // clone in another folder must read that clone's file.
    let output = std::path::Path::new("../docs/configuration.md");
    let generated = render();
    if std::env::var_os("QUIVER_BLESS").is_some() {
        std::fs::write(output, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(output)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", output.display()));
    assert!(
        committed == generated,
        "docs/configuration.md is out of date with config/src/model.rs: run \
         `QUIVER_BLESS=1 cargo test --release --workspace reference` and commit it"
    );
}
