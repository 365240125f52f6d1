// The Sparkplug B payload schema (Eclipse Sparkplug 3.0, `sparkplug_b.proto`, package
// org.eclipse.tahu.protobuf), written out here and read by protobufjs reflection: nothing is
// generated or downloaded. Only the parts Ferry reads are spelled; DataSet, Template, MetaData
// and PropertySet fields keep their numbers and are skipped as unknown fields when decoding.
import { createRequire } from 'node:module';
import type protobufjs from 'protobufjs';

const SPARKPLUG_B_PROTO = `
syntax = "proto2";
package org.eclipse.tahu.protobuf;

message Payload {
  message Metric {
    optional string name          = 1;
    optional uint64 alias         = 2;
    optional uint64 timestamp     = 3;
    optional uint32 datatype      = 4;
    optional bool   is_historical = 5;
    optional bool   is_transient  = 6;
    optional bool   is_null       = 7;
    oneof value {
      uint32 int_value     = 10;
      uint64 long_value    = 11;
      float  float_value   = 12;
      double double_value  = 13;
      bool   boolean_value = 14;
      string string_value  = 15;
      bytes  bytes_value   = 16;
    }
  }
  optional uint64 timestamp = 1;
  repeated Metric metrics   = 2;
  optional uint64 seq       = 3;
  optional string uuid      = 4;
  optional bytes  body      = 5;
  extensions 6 to max;
}
`;

/** Sparkplug B metric datatypes (spec section 6.4.16). */
export const SparkplugDataType = {
  Unknown: 0,
  Int8: 1,
  Int16: 2,
  Int32: 3,
  Int64: 4,
  UInt8: 5,
  UInt16: 6,
  UInt32: 7,
  UInt64: 8,
  Float: 9,
  Double: 10,
  Boolean: 11,
  String: 12,
  DateTime: 13,
  Text: 14,
  UUID: 15,
  DataSet: 16,
  Bytes: 17,
  File: 18,
  Template: 19,
} as const;

let payloadType: protobufjs.Type | undefined;

/** The Payload type, built on first use: a gateway with no Sparkplug devices never loads protobufjs. */
function sparkplugPayloadType(): protobufjs.Type {
  if (!payloadType) {
    const protobuf = createRequire(import.meta.url)('protobufjs') as typeof protobufjs;
    payloadType = protobuf.parse(SPARKPLUG_B_PROTO, { keepCase: true }).root.lookupType('org.eclipse.tahu.protobuf.Payload');
  }
  return payloadType;
}

/** A metric as decoded: uint64 fields are exact decimal strings. */
export interface SparkplugMetric {
  name?: string;
  alias?: string;
  timestamp?: string;
  datatype?: number;
  is_historical?: boolean;
  is_transient?: boolean;
  is_null?: boolean;
  int_value?: number;
  long_value?: string;
  float_value?: number;
  double_value?: number;
  boolean_value?: boolean;
  string_value?: string;
  bytes_value?: string;
  value?: string;
}

export interface SparkplugPayload {
  timestamp?: string;
  metrics?: SparkplugMetric[];
  seq?: string;
  uuid?: string;
}

/** Decodes a payload; throws on bytes that are not one (callers run inside a guarded decoder). */
export function decodeSparkplugPayload(bytes: Uint8Array): SparkplugPayload {
  const type = sparkplugPayloadType();
  const message = type.decode(bytes);
  return type.toObject(message, { longs: String, bytes: String, oneofs: true });
}

/** What a test or simulator gives to encode a metric: uint64 fields as bigint, number or decimal string. */
export interface SparkplugMetricInput {
  name?: string;
  alias?: number | bigint;
  timestamp?: number | bigint;
  datatype: number;
  is_null?: boolean;
  is_historical?: boolean;
  value?: number | bigint | boolean | string | Uint8Array;
}

export interface SparkplugPayloadInput {
  timestamp?: number | bigint;
  seq?: number;
  metrics: SparkplugMetricInput[];
}

function uint64(value: number | bigint): string {
  return BigInt.asUintN(64, BigInt(value)).toString();
}

/** The oneof field a datatype's value travels in, per the spec. */
function valueField(datatype: number): keyof SparkplugMetric | undefined {
  switch (datatype) {
    case SparkplugDataType.Int8:
    case SparkplugDataType.Int16:
    case SparkplugDataType.Int32:
    case SparkplugDataType.UInt8:
    case SparkplugDataType.UInt16:
    case SparkplugDataType.UInt32:
      return 'int_value';
    case SparkplugDataType.Int64:
    case SparkplugDataType.UInt64:
    case SparkplugDataType.DateTime:
      return 'long_value';
    case SparkplugDataType.Float:
      return 'float_value';
    case SparkplugDataType.Double:
      return 'double_value';
    case SparkplugDataType.Boolean:
      return 'boolean_value';
    case SparkplugDataType.String:
    case SparkplugDataType.Text:
    case SparkplugDataType.UUID:
      return 'string_value';
    case SparkplugDataType.Bytes:
    case SparkplugDataType.File:
      return 'bytes_value';
    default:
      return undefined;
  }
}

/**
 * Encodes a payload as an edge node would: signed integers in two's complement (Int8..Int32 in
 * the uint32 `int_value`, Int64 in the uint64 `long_value`). For tests and the simulator.
 */
export function encodeSparkplugPayload(input: SparkplugPayloadInput): Uint8Array {
  const metrics = input.metrics.map((m) => {
    const out: Record<string, unknown> = { datatype: m.datatype };
    if (m.name !== undefined) out.name = m.name;
    if (m.alias !== undefined) out.alias = uint64(m.alias);
    if (m.timestamp !== undefined) out.timestamp = uint64(m.timestamp);
    if (m.is_null) out.is_null = true;
    if (m.is_historical) out.is_historical = true;
    const field = valueField(m.datatype);
    if (field !== undefined && m.value !== undefined && !m.is_null) {
      const v = m.value;
      if (field === 'int_value') out.int_value = Number(BigInt.asUintN(32, BigInt(v as number | bigint)));
      else if (field === 'long_value') out.long_value = uint64(v as number | bigint);
      else out[field] = v;
    }
    return out;
  });
  const object: Record<string, unknown> = { metrics };
  if (input.timestamp !== undefined) object.timestamp = uint64(input.timestamp);
  if (input.seq !== undefined) object.seq = uint64(input.seq);
  const type = sparkplugPayloadType();
  return type.encode(type.fromObject(object)).finish();
}
