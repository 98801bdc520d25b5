//! OSM tag rules for one way: is it drivable, in which directions, at which speed.
//! Pure functions over `(key, value)` pairs, shared by the PBF and XML readers.

use super::class::RoadClass;
use super::config::ResolvedConfig;

/// Travel directions allowed on a way, relative to its node order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directions {
    Both,
    Forward,
    Backward,
}

/// What the importer keeps of a drivable way's tags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WayAttrs {
    pub class: RoadClass,
    pub directions: Directions,
    pub speed_forward_kmh: f32,
    pub speed_backward_kmh: f32,
}

fn get<'a>(tags: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// Decides whether a way is kept and with which attributes. `None` means "not a road for us".
pub(crate) fn classify_way(tags: &[(&str, &str)], cfg: &ResolvedConfig) -> Option<WayAttrs> {
    let class = RoadClass::from_tag(get(tags, "highway")?)?;
    if !cfg.keep[usize::from(class.code())] {
        return None;
    }
    if get(tags, "area") == Some("yes") {
        return None;
    }
    if cfg.respect_access && !motor_vehicles_allowed(tags) {
        return None;
    }
    let default_kmh = cfg.speed_kmh[usize::from(class.code())];
    let base = get(tags, "maxspeed")
        .and_then(parse_maxspeed_kmh)
        .unwrap_or(default_kmh);
    let directed = |key| get(tags, key).and_then(parse_maxspeed_kmh).unwrap_or(base);
    Some(WayAttrs {
        class,
        directions: oneway_directions(tags, class),
        speed_forward_kmh: directed("maxspeed:forward"),
        speed_backward_kmh: directed("maxspeed:backward"),
    })
}

/// The most specific access tag present decides: `motorcar`, then `motor_vehicle`, then
/// `vehicle`, then `access`. `destination`, `delivery` and the like still allow driving.
pub fn motor_vehicles_allowed(tags: &[(&str, &str)]) -> bool {
    for key in ["motorcar", "motor_vehicle", "vehicle", "access"] {
        if let Some(v) = get(tags, key) {
            return !matches!(
                v,
                "no" | "private" | "agricultural" | "forestry" | "agricultural;forestry"
            );
        }
    }
    true
}

/// OSM `oneway` rules: `yes`/`1`/`true` forward, `-1`/`reverse` backward, `no`/`false`/`0`
/// both; otherwise one-way forward when implied by `junction=roundabout|circular` or a
/// motorway class, else both.
///
/// ```
/// use pipeline::graph::{tags::{oneway_directions, Directions}, RoadClass};
/// assert_eq!(oneway_directions(&[("oneway", "-1")], RoadClass::Primary), Directions::Backward);
/// assert_eq!(oneway_directions(&[], RoadClass::Motorway), Directions::Forward);
/// assert_eq!(oneway_directions(&[("oneway", "no")], RoadClass::Motorway), Directions::Both);
/// ```
pub fn oneway_directions(tags: &[(&str, &str)], class: RoadClass) -> Directions {
    match get(tags, "oneway") {
        Some("yes" | "1" | "true") => Directions::Forward,
        Some("-1" | "reverse") => Directions::Backward,
        Some("no" | "false" | "0") => Directions::Both,
        _ => {
            let roundabout = matches!(get(tags, "junction"), Some("roundabout" | "circular"));
            if roundabout || class.implies_oneway() {
                Directions::Forward
            } else {
                Directions::Both
            }
        }
    }
}

/// Parses an OSM `maxspeed` value into km/h: `50`, `50 km/h`, `50kmh`, `30 mph`, `10 knots`.
/// Lists (`50;30`) use the first value. Symbolic values (`none`, `signals`, `walk`,
/// `DE:urban`, …) and out-of-range numbers give `None`, so the class default applies.
///
/// ```
/// use pipeline::graph::tags::parse_maxspeed_kmh;
/// assert_eq!(parse_maxspeed_kmh("50"), Some(50.0));
/// assert_eq!(parse_maxspeed_kmh("50 km/h"), Some(50.0));
/// assert!((parse_maxspeed_kmh("30 mph").unwrap() - 48.28).abs() < 0.01);
/// assert_eq!(parse_maxspeed_kmh("none"), None);
/// ```
pub fn parse_maxspeed_kmh(value: &str) -> Option<f32> {
    let first = value.split(';').next()?.trim();
    let (number, factor) = if let Some(n) = first.strip_suffix("mph") {
        (n, 1.609_344)
    } else if let Some(n) = first.strip_suffix("knots") {
        (n, 1.852)
    } else if let Some(n) = ["km/h", "kmh", "kph"]
        .iter()
        .find_map(|suffix| first.strip_suffix(suffix))
    {
        (n, 1.0)
    } else {
        (first, 1.0)
    };
    let kmh = number.trim().parse::<f32>().ok()? * factor;
    (kmh.is_finite() && kmh > 0.0 && kmh <= 300.0).then_some(kmh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ImportConfig;

    fn classify(tags: &[(&str, &str)]) -> Option<WayAttrs> {
        classify_way(tags, &ImportConfig::default().resolve().unwrap())
    }

    #[test]
    fn maxspeed_forms() {
        assert_eq!(parse_maxspeed_kmh("50kmh"), Some(50.0));
        assert_eq!(parse_maxspeed_kmh(" 70 kph"), Some(70.0));
        assert_eq!(parse_maxspeed_kmh("50;30"), Some(50.0));
        assert_eq!(parse_maxspeed_kmh("signals"), None);
        assert_eq!(parse_maxspeed_kmh("DE:urban"), None);
        assert_eq!(parse_maxspeed_kmh("0"), None);
        assert_eq!(parse_maxspeed_kmh("-20"), None);
        assert_eq!(parse_maxspeed_kmh("NaN"), None);
        assert_eq!(parse_maxspeed_kmh(""), None);
        assert!((parse_maxspeed_kmh("10 knots").unwrap() - 18.52).abs() < 1e-3);
    }

    #[test]
    fn missing_maxspeed_uses_class_default() {
        let a = classify(&[("highway", "residential")]).unwrap();
        assert_eq!(a.speed_forward_kmh, 30.0);
        let a = classify(&[("highway", "primary"), ("maxspeed", "none")]).unwrap();
        assert_eq!(a.speed_forward_kmh, 70.0);
    }

    #[test]
    fn directional_maxspeed() {
        let a = classify(&[
            ("highway", "secondary"),
            ("maxspeed", "50"),
            ("maxspeed:backward", "30"),
        ])
        .unwrap();
        assert_eq!((a.speed_forward_kmh, a.speed_backward_kmh), (50.0, 30.0));
    }

    #[test]
    fn non_roads_and_closed_roads_are_dropped() {
        assert!(classify(&[("highway", "footway")]).is_none());
        assert!(classify(&[("building", "yes")]).is_none());
        assert!(classify(&[("highway", "service"), ("area", "yes")]).is_none());
        assert!(classify(&[("highway", "service"), ("access", "private")]).is_none());
        assert!(classify(&[
            ("highway", "service"),
            ("access", "no"),
            ("motor_vehicle", "yes")
        ])
        .is_some());
        assert!(classify(&[("highway", "primary"), ("motor_vehicle", "no")]).is_none());
        assert!(classify(&[("highway", "residential"), ("access", "destination")]).is_some());
    }

    #[test]
    fn roundabout_implies_oneway() {
        let t = [("highway", "primary"), ("junction", "roundabout")];
        assert_eq!(
            oneway_directions(&t, RoadClass::Primary),
            Directions::Forward
        );
        let t = [("junction", "circular")];
        assert_eq!(
            oneway_directions(&t, RoadClass::Tertiary),
            Directions::Forward
        );
        assert_eq!(
            oneway_directions(&[("oneway", "true")], RoadClass::Service),
            Directions::Forward
        );
        assert_eq!(
            oneway_directions(&[], RoadClass::MotorwayLink),
            Directions::Forward
        );
        assert_eq!(oneway_directions(&[], RoadClass::Trunk), Directions::Both);
    }
}
