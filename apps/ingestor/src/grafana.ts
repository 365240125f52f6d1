// Links from the ops view to the Grafana dashboards shipped in docker/grafana/dashboards: a device
// to "Ferry / Device detail", a gateway to "Ferry / Gateway backlog", each with its template
// variable set. No base URL configured (http.grafanaUrl), no link.

/** The shipped dashboards' uids and the variable each takes (test: grafana.test.ts reads their JSON). */
export const GRAFANA_DASHBOARDS = {
  device: { uid: 'ferry-device-detail', variable: 'device' },
  gateway: { uid: 'ferry-gateway-backlog', variable: 'gateway' },
} as const;

export type GrafanaSubject = keyof typeof GRAFANA_DASHBOARDS;

/** `<base>/d/<uid>?var-<variable>=<id>` (Grafana adds the slug itself), or null without a base URL. */
export function grafanaLink(baseUrl: string | undefined, subject: GrafanaSubject, id: string): string | null {
  if (baseUrl === undefined) return null;
  const { uid, variable } = GRAFANA_DASHBOARDS[subject];
  const url = new URL(`d/${uid}`, baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`);
  url.searchParams.set(`var-${variable}`, id);
  return url.toString();
}
