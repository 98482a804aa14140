/**
 * Small DOM and formatting helpers shared by the renderers and the panel.
 *
 * Everything the kernel sends is data: it goes into the page only through
 * `textContent`, attributes set one by one, and (for the kernel's own SVG) a
 * `data:` URL in an <img>, which cannot run scripts. Nothing is parsed as HTML.
 */

/** The class of the message a renderer shows instead of a payload it cannot read. */
export const ERROR_CLASS = 'jp-Sandbox-error';

/** A payload that does not have the expected shape. */
export class PayloadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PayloadError';
  }
}

/** A new element with a class (or classes, space-separated) and optional text. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** The box a renderer shows when it cannot render: never an empty output. */
export function errorBox(what: string, error: unknown, raw?: unknown): HTMLElement {
  const box = el('div', ERROR_CLASS);
  const reason = error instanceof Error ? error.message : String(error);
  box.appendChild(el('div', 'jp-Sandbox-errorTitle', `Cannot show this ${what}: ${reason}`));
  if (raw !== undefined) {
    const details = el('details', 'jp-Sandbox-errorRaw');
    details.appendChild(el('summary', undefined, 'the data received'));
    let text: string;
    try {
      text = JSON.stringify(raw, null, 2) ?? String(raw);
    } catch {
      text = String(raw);
    }
    if (text.length > 20000) {
      text = text.slice(0, 20000) + '\n…';
    }
    details.appendChild(el('pre', undefined, text));
    box.appendChild(details);
  }
  return box;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** 1536 -> "1.5 KiB"; null/undefined -> "?". */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) {
    return '?';
  }
  let value = Math.abs(bytes);
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  const sign = bytes < 0 ? '-' : '';
  if (unit === 0) {
    return `${sign}${value} B`;
  }
  const digits = value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${sign}${value.toFixed(digits)} ${UNITS[unit]}`;
}

/** 0.05 -> "50 ms", 12.345 -> "12.3 s", 125 -> "2 min 5 s". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) {
    return '?';
  }
  if (seconds < 1) {
    return `${Math.round(seconds * 1000)} ms`;
  }
  if (seconds < 60) {
    return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  }
  const min = Math.floor(seconds / 60);
  return `${min} min ${Math.round(seconds - min * 60)} s`;
}

/** The base64 of a string's UTF-8 bytes (btoa alone takes Latin-1 only). */
export function utf8ToBase64(text: string): string {
  const binary = encodeURIComponent(text).replace(/%([0-9A-F]{2})/g, (_m, hex: string) =>
    String.fromCharCode(parseInt(hex, 16))
  );
  return btoa(binary);
}

/** An <img> showing an SVG document: as an image it cannot run scripts or load anything. */
export function svgImage(svg: string, alt: string, className?: string): HTMLImageElement {
  const img = el('img', className);
  img.alt = alt;
  img.src = `data:image/svg+xml;base64,${utf8ToBase64(svg)}`;
  return img;
}

// -- payload checks -------------------------------------------------------------------

export type Json = unknown;

export function isObject(value: Json): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function requireObject(value: Json, where: string): Record<string, unknown> {
  if (!isObject(value)) {
    throw new PayloadError(`${where} is not an object`);
  }
  return value;
}

export function requireArray(value: Json, where: string): unknown[] {
  if (!Array.isArray(value)) {
    throw new PayloadError(`${where} is not a list`);
  }
  return value;
}

/** A number, or null when `nullable` and the value is null/absent. */
export function num(value: Json, where: string, nullable: true): number | null;
export function num(value: Json, where: string, nullable?: false): number;
export function num(value: Json, where: string, nullable = false): number | null {
  if (value === null || value === undefined) {
    if (nullable) {
      return null;
    }
    throw new PayloadError(`${where} is missing`);
  }
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new PayloadError(`${where} is not a number`);
  }
  return value;
}

/** A string; absent/null becomes `fallback`. */
export function str(value: Json, where: string, fallback = ''): string {
  if (value === null || value === undefined) {
    return fallback;
  }
  if (typeof value !== 'string') {
    throw new PayloadError(`${where} is not a string`);
  }
  return value;
}

/** The payload's format version: 1 is the one this extension knows. */
export function checkVersion(data: Record<string, unknown>, what: string): void {
  const version = data.version;
  if (version !== undefined && version !== 1) {
    throw new PayloadError(
      `${what} format version ${JSON.stringify(version)} is not supported (this extension reads version 1)`
    );
  }
}
