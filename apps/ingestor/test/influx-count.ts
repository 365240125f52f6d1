// Exact point counts in a real influxd, for the tests that must prove every reading landed once.
import type { InfluxdHandle } from '@ferry/testkit';

/** Points of `measurement` that carry field `field`, across all series. */
export async function countPoints(influxd: InfluxdHandle, db: string, field: string, measurement = 'telemetry'): Promise<number> {
  const series = await influxd.query(db, `SELECT count("${field}") FROM "${measurement}"`);
  const value = series[0]?.values[0]?.[1];
  return typeof value === 'number' ? value : 0;
}
