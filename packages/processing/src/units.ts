// Unit normalisation: devices of one fleet report the same quantity in different units
// (°F and °C, hPa and kPa, Wh and kWh); a chart or a bill needs one. Each unit is a linear map
// to and from its dimension's base unit.
import { ReasonCounts, withValue, type Sample, type SeriesOperator } from './sample.js';

interface UnitDefinition {
  readonly dimension: 'temperature' | 'pressure' | 'energy' | 'power' | 'speed' | 'volume';
  readonly toBase: (value: number) => number;
  readonly fromBase: (base: number) => number;
}

const linear = (dimension: UnitDefinition['dimension'], factor: number): UnitDefinition => ({
  dimension,
  toBase: (v) => v * factor,
  fromBase: (b) => b / factor,
});

// Written the way the textbook writes them, so 212 °F comes out as exactly 100 °C.
const celsius: UnitDefinition = { dimension: 'temperature', toBase: (v) => v, fromBase: (b) => b };
const fahrenheit: UnitDefinition = { dimension: 'temperature', toBase: (v) => ((v - 32) * 5) / 9, fromBase: (b) => (b * 9) / 5 + 32 };
const kelvin: UnitDefinition = { dimension: 'temperature', toBase: (v) => v - 273.15, fromBase: (b) => b + 273.15 };

/** Base units: °C, Pa, J, W, m/s, L. Aliases name the same definition. */
export const UNITS: Readonly<Record<string, UnitDefinition>> = {
  '°C': celsius,
  degC: celsius,
  '°F': fahrenheit,
  degF: fahrenheit,
  K: kelvin,
  Pa: linear('pressure', 1),
  hPa: linear('pressure', 100),
  mbar: linear('pressure', 100),
  kPa: linear('pressure', 1000),
  MPa: linear('pressure', 1e6),
  bar: linear('pressure', 1e5),
  psi: linear('pressure', 6894.757293168),
  J: linear('energy', 1),
  kJ: linear('energy', 1e3),
  MJ: linear('energy', 1e6),
  Wh: linear('energy', 3600),
  kWh: linear('energy', 3.6e6),
  MWh: linear('energy', 3.6e9),
  mW: linear('power', 1e-3),
  W: linear('power', 1),
  kW: linear('power', 1e3),
  MW: linear('power', 1e6),
  'm/s': linear('speed', 1),
  'km/h': linear('speed', 1 / 3.6),
  mph: linear('speed', 0.44704),
  kn: linear('speed', 1852 / 3600),
  mL: linear('volume', 1e-3),
  L: linear('volume', 1),
  m3: linear('volume', 1000),
  'm³': linear('volume', 1000),
};

/** Why `from` cannot be converted to `to`, or undefined when it can. */
export function unitMismatch(from: string, to: string): string | undefined {
  const a = UNITS[from];
  const b = UNITS[to];
  if (!a) return `unknown unit "${from}" (known: ${Object.keys(UNITS).join(', ')})`;
  if (!b) return `unknown unit "${to}" (known: ${Object.keys(UNITS).join(', ')})`;
  if (a.dimension !== b.dimension) return `cannot convert ${a.dimension} (${from}) to ${b.dimension} (${to})`;
  return undefined;
}

/** The conversion from one unit to another; throws a RangeError when there is none. */
export function unitConversion(from: string, to: string): (value: number) => number {
  const problem = unitMismatch(from, to);
  if (problem !== undefined) throw new RangeError(problem);
  const a = UNITS[from]!;
  const b = UNITS[to]!;
  if (a === b) return (v) => v;
  return (v) => b.fromBase(a.toBase(v));
}

export interface UnitOptions {
  readonly from: string;
  readonly to: string;
  readonly flag: boolean;
}

/** Counts `converted`. */
export class UnitNormaliser implements SeriesOperator {
  readonly #convert: (value: number) => number;
  readonly #flag: string | undefined;

  constructor(
    opts: UnitOptions,
    private readonly counts: ReasonCounts,
  ) {
    this.#convert = unitConversion(opts.from, opts.to);
    this.#flag = opts.flag ? `unit_${opts.from}_to_${opts.to}` : undefined;
  }

  push(sample: Sample): Sample {
    this.counts.add('converted');
    return withValue(sample, this.#convert(sample.value), this.#flag);
  }
}
