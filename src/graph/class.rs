//! `RoadClass`: the closed set of OSM `highway=*` values the graph understands, with their
//! one-byte codes (stored in the graph file) and default speeds.

use std::fmt;

/// A drivable OSM highway class. The discriminant is the code stored in the graph file:
/// never reorder or reuse codes, only append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum RoadClass {
    Motorway = 0,
    MotorwayLink = 1,
    Trunk = 2,
    TrunkLink = 3,
    Primary = 4,
    PrimaryLink = 5,
    Secondary = 6,
    SecondaryLink = 7,
    Tertiary = 8,
    TertiaryLink = 9,
    Unclassified = 10,
    Residential = 11,
    LivingStreet = 12,
    Service = 13,
    Road = 14,
    Track = 15,
}

impl RoadClass {
    /// Every class, in code order.
    pub const ALL: [RoadClass; 16] = [
        RoadClass::Motorway,
        RoadClass::MotorwayLink,
        RoadClass::Trunk,
        RoadClass::TrunkLink,
        RoadClass::Primary,
        RoadClass::PrimaryLink,
        RoadClass::Secondary,
        RoadClass::SecondaryLink,
        RoadClass::Tertiary,
        RoadClass::TertiaryLink,
        RoadClass::Unclassified,
        RoadClass::Residential,
        RoadClass::LivingStreet,
        RoadClass::Service,
        RoadClass::Road,
        RoadClass::Track,
    ];

    /// The OSM tag value, e.g. `"motorway_link"`.
    ///
    /// ```
    /// use pipeline::graph::RoadClass;
    /// assert_eq!(RoadClass::LivingStreet.as_str(), "living_street");
    /// assert_eq!(RoadClass::from_tag("living_street"), Some(RoadClass::LivingStreet));
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            RoadClass::Motorway => "motorway",
            RoadClass::MotorwayLink => "motorway_link",
            RoadClass::Trunk => "trunk",
            RoadClass::TrunkLink => "trunk_link",
            RoadClass::Primary => "primary",
            RoadClass::PrimaryLink => "primary_link",
            RoadClass::Secondary => "secondary",
            RoadClass::SecondaryLink => "secondary_link",
            RoadClass::Tertiary => "tertiary",
            RoadClass::TertiaryLink => "tertiary_link",
            RoadClass::Unclassified => "unclassified",
            RoadClass::Residential => "residential",
            RoadClass::LivingStreet => "living_street",
            RoadClass::Service => "service",
            RoadClass::Road => "road",
            RoadClass::Track => "track",
        }
    }

    /// Parses an OSM `highway=*` value; `None` for anything not drivable or unknown.
    pub fn from_tag(value: &str) -> Option<RoadClass> {
        RoadClass::ALL.into_iter().find(|c| c.as_str() == value)
    }

    /// The one-byte code stored in the graph file.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Inverse of [`RoadClass::code`].
    pub fn from_code(code: u8) -> Option<RoadClass> {
        RoadClass::ALL.get(usize::from(code)).copied()
    }

    /// Speed in km/h assumed when a way has no usable `maxspeed`. Rough European urban/rural
    /// figures; override them with `ImportConfig::default_speed_kmh`.
    pub fn default_speed_kmh(self) -> f32 {
        match self {
            RoadClass::Motorway => 120.0,
            RoadClass::MotorwayLink => 60.0,
            RoadClass::Trunk => 90.0,
            RoadClass::TrunkLink => 50.0,
            RoadClass::Primary => 70.0,
            RoadClass::PrimaryLink => 50.0,
            RoadClass::Secondary => 60.0,
            RoadClass::SecondaryLink => 50.0,
            RoadClass::Tertiary => 50.0,
            RoadClass::TertiaryLink => 40.0,
            RoadClass::Unclassified => 40.0,
            RoadClass::Residential => 30.0,
            RoadClass::LivingStreet => 10.0,
            RoadClass::Service => 20.0,
            RoadClass::Road => 40.0,
            RoadClass::Track => 20.0,
        }
    }

    /// Motorways and their links are one-way unless tagged otherwise (OSM convention).
    pub fn implies_oneway(self) -> bool {
        matches!(self, RoadClass::Motorway | RoadClass::MotorwayLink)
    }
}

impl fmt::Display for RoadClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in RoadClass::ALL {
            assert_eq!(RoadClass::from_code(c.code()), Some(c));
            assert_eq!(RoadClass::from_tag(c.as_str()), Some(c));
        }
        assert_eq!(RoadClass::from_code(16), None);
        assert_eq!(RoadClass::from_tag("footway"), None);
    }
}
