//! Coarse distances without floats: an equirectangular approximation with a
//! fixed-point cosine table (good to ~1 % below 1,000 km, and the impossible-travel rule
//! only needs to tell walking from flying).

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

use super::config::invalid;

/// A coarse location in 1/10,000 degree (about 11 m).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoPoint {
    /// Latitude × 10^4, −900,000..=900,000.
    pub lat_e4: i32,
    /// Longitude × 10^4, −1,800,000..=1,800,000.
    pub lon_e4: i32,
}

/// cos(d°) × 10^4 for d = 0..=90.
const COS_E4: [i64; 91] = [
    10000, 9998, 9994, 9986, 9976, 9962, 9945, 9925, 9903, 9877, 9848, 9816, 9781, 9744, 9703,
    9659, 9613, 9563, 9511, 9455, 9397, 9336, 9272, 9205, 9135, 9063, 8988, 8910, 8829, 8746, 8660,
    8572, 8480, 8387, 8290, 8192, 8090, 7986, 7880, 7771, 7660, 7547, 7431, 7314, 7193, 7071, 6947,
    6820, 6691, 6561, 6428, 6293, 6157, 6018, 5878, 5736, 5592, 5446, 5299, 5150, 5000, 4848, 4695,
    4540, 4384, 4226, 4067, 3907, 3746, 3584, 3420, 3256, 3090, 2924, 2756, 2588, 2419, 2250, 2079,
    1908, 1736, 1564, 1392, 1219, 1045, 872, 698, 523, 349, 175, 0,
];

/// Metres per 10^-4 degree of latitude, × 1000 (111.32 km per degree).
const MM_PER_E4_DEGREE: i64 = 11_132;

impl GeoPoint {
    /// Checks the ranges; `param` names the field in the error.
    pub fn validate(&self, param: &str) -> Result<(), ApiError> {
        if !(-900_000..=900_000).contains(&self.lat_e4) {
            return Err(invalid(
                format!("{param}.lat_e4"),
                "must be -900000..=900000",
            ));
        }
        if !(-1_800_000..=1_800_000).contains(&self.lon_e4) {
            return Err(invalid(
                format!("{param}.lon_e4"),
                "must be -1800000..=1800000",
            ));
        }
        Ok(())
    }

    /// Approximate distance in metres.
    pub fn distance_m(self, other: GeoPoint) -> u64 {
        let dlat = (i64::from(self.lat_e4) - i64::from(other.lat_e4)).abs();
        let raw = (i64::from(self.lon_e4) - i64::from(other.lon_e4)).abs();
        let dlon = raw.min(3_600_000 - raw).max(0);
        let mid_deg = ((i64::from(self.lat_e4) + i64::from(other.lat_e4)) / 2).abs() / 10_000;
        let cos = COS_E4[mid_deg.clamp(0, 90) as usize];
        let dy = dlat * MM_PER_E4_DEGREE / 1000;
        let dx = dlon * MM_PER_E4_DEGREE / 1000 * cos / 10_000;
        let sq = (dx as u128) * (dx as u128) + (dy as u128) * (dy as u128);
        sq.isqrt() as u64
    }
}
