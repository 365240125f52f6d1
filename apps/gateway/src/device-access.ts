// Stage 1, who may connect and as which device: the device listener's accounts (none, one shared
// username/password, or a password file of per-device accounts) and the rule that a device logged
// in as X publishes only as device X. The listener asks at CONNECT; the gateway asks per publish.
import { readFileSync, statSync } from 'node:fs';
import { createHash, timingSafeEqual } from 'node:crypto';
import { FerryError } from '@ferry/protocol';
import type { Rejection } from '@ferry/protocol';
import { parsePasswordFile, passwordFileCheck } from '@ferry/runtime';
import type { Logger, PasswordCheck } from '@ferry/runtime';
import type { GatewayConfig } from './config.js';

export type ListenConfig = Exclude<GatewayConfig['devices']['listen'], false>;

/** Why a CONNECT was refused: `anonymous` sent no username, `credentials` sent wrong ones. */
export type ConnectRefusal = 'anonymous' | 'credentials';

export interface DeviceAccess {
  /** Whether devices must log in (reported in the listener's start-up line). */
  readonly auth: 'anonymous' | 'shared' | 'passwordFile';
  /** Whether the per-device rule is on. */
  readonly deviceMustMatchUser: boolean;
  /** null lets the device in. Never rejects. */
  connect(username: string | undefined, password: Buffer | undefined): Promise<ConnectRefusal | null>;
  /** Whether a device logged in as `username` (undefined: anonymous) may publish as `deviceId`. */
  mayPublishAs(username: string | undefined, deviceId: string): boolean;
}

/** The dead-letter reason when a device logged in as `username` publishes as another device. */
export function notAuthorized(username: string | undefined, deviceId: string): Rejection {
  return {
    code: 'FERRY_ERR_DEVICE_NOT_AUTHORIZED',
    reason: `user "${username ?? ''}" published as device "${deviceId.slice(0, 200)}": with devices.listen.deviceMustMatchUser a device publishes only under its own user name (or list the user in devices.listen.bridgeUsers)`,
  };
}

// Comparing digests keeps the comparison constant-time whatever the lengths are.
function digest(value: string | Buffer): Buffer {
  return createHash('sha256').update(value).digest();
}

/**
 * The password file, re-read when it changes (size, mtime or inode), so `ferry broker passwd add`
 * takes effect at a device's next CONNECT without a restart. A file that cannot be read or parsed
 * at start is a config error; later, the last good entries stay in force and the error is logged.
 */
function passwordFileAccounts(path: string, logger: Logger): PasswordCheck {
  let stamp = '';
  let current: PasswordCheck;
  function load(): PasswordCheck {
    const st = statSync(path);
    const next = `${st.ino}:${st.size}:${st.mtimeMs}`;
    if (next !== stamp) {
      const entries = parsePasswordFile(readFileSync(path, 'utf8'), path);
      if (entries.length === 0) logger.warn({ passwordFile: path }, 'the device password file lists no account: every device is refused');
      current = passwordFileCheck(entries);
      stamp = next;
    }
    return current;
  }
  try {
    current = load();
  } catch (err) {
    const reason = err instanceof FerryError ? err.message : (err as Error).message;
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', `devices.listen.passwordFile: cannot read ${path} (${reason}); expected a file written by \`ferry broker passwd add <deviceId> --file ${path}\``, {
      field: 'devices.listen.passwordFile',
    });
  }
  return {
    check(username, password) {
      try {
        return load().check(username, password);
      } catch (err) {
        logger.error({ err, passwordFile: path }, 'the device password file could not be re-read; its last good accounts stay in force');
        return current.check(username, password);
      }
    },
  };
}

export function createDeviceAccess(listen: ListenConfig, logger: Logger): DeviceAccess {
  const { username, password, passwordFile, allowAnonymous } = listen;
  const deviceMustMatchUser = listen.deviceMustMatchUser ?? passwordFile !== undefined;
  const bridges = new Set(listen.bridgeUsers);
  let accounts: PasswordCheck | undefined;
  if (passwordFile !== undefined) accounts = passwordFileAccounts(passwordFile, logger);
  else if (username !== undefined) {
    const expected = digest(password ?? '');
    accounts = {
      check: (user, given) => Promise.resolve(user === username && given !== undefined && timingSafeEqual(digest(given), expected)),
    };
  }
  return {
    auth: passwordFile !== undefined ? 'passwordFile' : username !== undefined ? 'shared' : 'anonymous',
    deviceMustMatchUser,
    async connect(user, given) {
      // Without accounts the listener is open (the config allows that on loopback, or on purpose).
      if (!accounts) return null;
      if (user === undefined) return allowAnonymous ? null : 'anonymous';
      return (await accounts.check(user, given)) ? null : 'credentials';
    },
    mayPublishAs(user, deviceId) {
      // An anonymous device is here only because the config lets it in (allowAnonymous).
      if (!deviceMustMatchUser || user === undefined || bridges.has(user)) return true;
      return user === deviceId;
    },
  };
}
