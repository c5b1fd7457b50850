"""In-memory 1C catalog behind the 1C emulator, plus deterministic demo and synthetic catalogs.

Records keep the exact shape 1C's ``/api/catalog`` returns (see the seed contract), so the
emulator serialises them as they are. Categories also carry ``modified_at``: the seed's example
omits it, but the contract requires ``modified_at`` to change on any object change, and an
incremental sync of categories (``type=category&modified_since=...``) needs it. A record stored
without one (``add_raw``, shaped like the seed's categories) matches every ``modified_since``.

Pages are cut from sorted indexes ((modified_at, id) per type and per (type, parent)), kept
up to date with ``bisect`` on every mutation, so a page costs O(log n + limit) even with 100,000
products, instead of re-sorting the catalog per request.
"""

from __future__ import annotations

import bisect
import json
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S"
ROOT_PARENT = "0"
CATEGORY, PRODUCT = "category", "product"

Clock = Callable[[], datetime | str]
_ENCODER = json.JSONEncoder(ensure_ascii=False)
_Entry = tuple[str, str, str]  # (modified_at, id, storage key): sorts pages as 1C does


def format_timestamp(moment: datetime) -> str:
    """1C's timestamp format: second resolution, no timezone."""
    return moment.strftime(TIMESTAMP_FORMAT)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _text(value: Any) -> str | None:
    """Index key for possibly malformed raw values (ints, lists...) without crashing the sort."""
    return value if value is None or isinstance(value, str) else str(value)


class Catalog:
    """Thread-safe store of 1C categories and products keyed by id."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._lock = threading.RLock()
        self._clock: Clock = clock or _utc_now
        self._records: dict[str, dict] = {}
        self._index_keys: dict[str, tuple[str | None, str | None, _Entry]] = {}
        self._by_type: dict[str | None, list[_Entry]] = {}
        self._by_parent: dict[tuple[str | None, str | None], list[_Entry]] = {}
        self._encoded: dict[str, bytes] = {}  # JSON per record, filled lazily by query_json
        self._raw_seq = 0

    # -- clock -------------------------------------------------------------------------------
    def set_clock(self, clock: Clock) -> None:
        """Tests pin time so modified_at values (and thus page order) are predictable."""
        with self._lock:
            self._clock = clock

    def now(self) -> str:
        moment = self._clock()
        return moment if isinstance(moment, str) else format_timestamp(moment)

    # -- index maintenance -------------------------------------------------------------------
    def _keys_for(self, key: str, record: dict) -> tuple[str | None, str | None, _Entry]:
        entry = (_text(record.get("modified_at")) or "", _text(record.get("id")) or "", key)
        return _text(record.get("type")), _text(record.get("parent")), entry

    def _put(self, key: str, record: dict) -> None:
        if key in self._index_keys:
            self._unindex(key)
        kind, parent, entry = self._index_keys[key] = self._keys_for(key, record)
        self._records[key] = record
        bisect.insort(self._by_type.setdefault(kind, []), entry)
        bisect.insort(self._by_parent.setdefault((kind, parent), []), entry)

    def _unindex(self, key: str) -> None:
        kind, parent, entry = self._index_keys.pop(key)
        self._encoded.pop(key, None)
        for index in (self._by_type[kind], self._by_parent[(kind, parent)]):
            del index[bisect.bisect_left(index, entry)]

    def _load(self, records: Iterable[dict]) -> None:
        """Bulk insert for generators: one sort at the end instead of n insorts, and every record
        pre-encoded so even the first full sync of a benchmark is served at full speed."""
        with self._lock:
            for record in records:
                key = record["id"]
                self._records[key] = record
                self._index_keys[key] = self._keys_for(key, record)
                self._encoded[key] = _ENCODER.encode(record).encode()
            self._by_type, self._by_parent = {}, {}
            for kind, parent, entry in self._index_keys.values():
                self._by_type.setdefault(kind, []).append(entry)
                self._by_parent.setdefault((kind, parent), []).append(entry)
            for index in (*self._by_type.values(), *self._by_parent.values()):
                index.sort()

    # -- mutations ---------------------------------------------------------------------------
    def upsert_category(
        self, id: str, parent: str, name: str, modified_at: str | None = None
    ) -> dict:
        if not id or not isinstance(id, str):
            raise ValueError("category id must be a non-empty string")
        with self._lock:
            record = {"id": id, "parent": parent, "name": name, "type": CATEGORY}
            record["modified_at"] = modified_at or self.now()
            self._put(id, record)
            return dict(record)

    def upsert_product(self, record: dict, modified_at: str | None = None) -> dict:
        """Merge ``record`` onto the stored product (creating it) and bump modified_at."""
        product_id = record.get("id")
        if not product_id or not isinstance(product_id, str):
            raise ValueError("product id must be a non-empty string")
        with self._lock:
            current = self._records.get(product_id) or {"parent": ROOT_PARENT}
            merged = {**current, **record, "type": PRODUCT}
            merged["modified_at"] = modified_at or self.now()
            self._put(product_id, merged)
            return dict(merged)

    def touch(self, id: str) -> dict:
        """Simulate an edit in 1C that changes nothing visible but modified_at."""
        with self._lock:
            record = {**self._records[id], "modified_at": self.now()}
            self._put(id, record)
            return dict(record)

    def remove(self, id: str) -> bool:
        """Delete outright: like 1C, the API then simply stops returning it (no tombstone)."""
        with self._lock:
            if id not in self._records:
                return False
            self._unindex(id)
            del self._records[id]
            return True

    def add_raw(self, record: dict) -> str:
        """Store ``record`` verbatim, unvalidated, for fault tests; returns its storage key."""
        with self._lock:
            key = record.get("id")
            if not isinstance(key, str) or not key:
                self._raw_seq += 1
                key = f"\x00raw-{self._raw_seq}"
            self._put(key, dict(record))
            return key

    # -- reads -------------------------------------------------------------------------------
    def get(self, id: str) -> dict | None:
        with self._lock:
            record = self._records.get(id)
            return dict(record) if record is not None else None

    def _all(self, kind: str) -> list[dict]:
        with self._lock:
            return [dict(self._records[key]) for *_, key in self._by_type.get(kind, [])]

    def categories(self) -> list[dict]:
        return self._all(CATEGORY)

    def products(self) -> list[dict]:
        return self._all(PRODUCT)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {str(kind): len(index) for kind, index in self._by_type.items()}

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, id: object) -> bool:
        return id in self._records

    def query(
        self,
        type: str,
        parent: str | None = None,
        modified_since: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[int, list[dict]]:
        """One page ordered by (modified_at, id) and the total count of matching records.

        ``parent=None`` means no parent filter: every level of the tree as one flat list (the
        seed only shows ``parent`` on category queries; products are queried without it).
        ``modified_since`` is inclusive (modified_at >= modified_since, "начиная с указанного
        времени"), compared as text, which is exact for the fixed-width 1C format. A record
        without ``modified_at`` matches every ``modified_since`` and comes first, as the seed's
        categories (which carry none) are returned to its ``modified_since`` queries.
        """
        with self._lock:
            count, keys = self._page(type, parent, modified_since, limit, offset)
            return count, [dict(self._records[key]) for key in keys]

    def query_json(
        self,
        type: str,
        parent: str | None = None,
        modified_since: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> bytes:
        """``query`` as the 1C response body. Each record is JSON-encoded once and reused until
        it changes, so serving a page of 100 products stays well under a millisecond."""
        with self._lock:
            count, keys = self._page(type, parent, modified_since, limit, offset)
            parts = []
            for key in keys:
                encoded = self._encoded.get(key)
                if encoded is None:
                    encoded = _ENCODER.encode(self._records[key]).encode()
                    self._encoded[key] = encoded
                parts.append(encoded)
        return b'{"count": %d, "data": [%s]}' % (count, b", ".join(parts))

    def _page(
        self, type: str, parent: str | None, modified_since: str | None, limit: int, offset: int
    ) -> tuple[int, list[str]]:
        if parent is None:
            index = self._by_type.get(type, [])
        else:
            index = self._by_parent.get((type, parent), [])
        start = bisect.bisect_left(index, (modified_since,)) if modified_since else 0
        # Records without `modified_at` (sorted first, under "") match every `modified_since`:
        # the seed's categories carry none, and its `modified_since=2026-02-11…` queries return
        # them. The page is cut from those, then from the dated records at `start` on.
        undated = bisect.bisect_left(index, ("\x00",)) if modified_since else 0
        page = index[min(offset, undated) : min(offset + limit, undated)]
        page += index[start + max(0, offset - undated) : start + max(0, offset + limit - undated)]
        return undated + len(index) - start, [key for *_, key in page]


# -- generators ------------------------------------------------------------------------------
# The demo tree, by indentation: 7 levels under "Бакалея"; "Вино" gets 130 generated children.
_TREE = """
Алкогольная продукция
  Вино
  Пиво
  Крепкий алкоголь
    Коньяк
    Водка
Бакалея
  Крупы и бобовые
    Крупы
      Рис
        Рис длиннозёрный
          Рис пропаренный
            Рис пропаренный в пакетиках
      Гречка
      Пшено
    Бобовые
  Макаронные изделия
  Мука и смеси для выпечки
  Масло растительное
  Специи и приправы
  Сахар и соль
Молочная продукция
  Молоко
  Кефир и йогурты
  Масло сливочное
  Сыры
    Твёрдые сыры
    Мягкие сыры
Овощи и фрукты
  Овощи
  Фрукты
  Зелень
Напитки
  Вода
  Соки
  Чай
  Кофе
    Кофе в зёрнах
    Кофе молотый
Кондитерские изделия
  Шоколад
  Печенье
  Конфеты
Мясо и птица
  Курица
  Говядина
  Колбасы
Бытовая химия
  Средства для стирки
  Средства для посуды
"""
# category ; name bases ; sizes ; brands (or origins) ; composition ("-" = none) ; bulk (+)
_LINES_TABLE = """
Рис пропаренный в пакетиках ; Рис длинный пропаренный|Рис пропаренный в варочных пакетиках|Рис басмати пропаренный ; 400г|800г|5х80г ; Гудвилл|Мистраль|Увелка|Националь ; рис
Рис пропаренный ; Рис длинный пропаренный|Рис золотистый пропаренный ; 800г|900г ; Гудвилл|Мистраль|Агро-Альянс ; рис
Рис длиннозёрный ; Рис жасмин|Рис басмати|Рис длиннозёрный шлифованный ; 500г|900г ; Мистраль|Националь|Ярмарка ; рис
Рис ; Рис круглозёрный|Рис для плова|Рис для суши ; 800г|1кг ; Увелка|Мистраль ; рис
Гречка ; Крупа гречневая ядрица|Гречка зелёная|Гречка продел ; 800г|900г|5х80г ; Мистраль|Увелка|Ярмарка ; гречневая крупа
Пшено ; Пшено шлифованное|Пшено в пакетиках ; 800г|4х100г ; Увелка|Ярмарка ; пшено
Бобовые ; Горох колотый|Фасоль красная|Чечевица красная|Нут ; 450г|800г ; Мистраль|Ярмарка ; -
Макаронные изделия ; Спагетти|Перья рифлёные|Рожки|Фузилли|Вермишель ; 400г|450г|500г ; Barilla|Макфа|Шебекинские ; мука из твёрдых сортов пшеницы, вода
Мука и смеси для выпечки ; Мука пшеничная высший сорт|Мука ржаная|Смесь для блинов ; 1кг|2кг|500г ; Макфа|Увелка|С.Пудовъ ; мука пшеничная
Масло растительное ; Масло подсолнечное рафинированное|Масло оливковое Extra Virgin ; 0,5л|1л ; Золотая семечка|Олейна|Borges ; -
Специи и приправы ; Перец чёрный молотый|Паприка сладкая|Приправа для плова ; 10г|20г|50г ; Kotanyi|Галерея вкусов|Трапеза ; -
Сахар и соль ; Сахар-песок|Сахар тростниковый|Соль поваренная|Соль морская ; 1кг|500г ; Русский сахар|Мистраль|Экстра ; -
Молоко ; Молоко пастеризованное 3,2%|Молоко ультрапастеризованное 2,5% ; 930мл|1л|1,4л ; Простоквашино|Домик в деревне|Вкуснотеево ; молоко нормализованное
Кефир и йогурты ; Кефир 2,5%|Йогурт питьевой клубника|Ряженка 4%|Йогурт греческий ; 270г|450г|900г ; Простоквашино|Danone|Чудо ; молоко нормализованное, закваска
Масло сливочное ; Масло сливочное 82,5%|Масло сливочное 72,5% ; 180г|400г ; Экомилк|Вкуснотеево ; сливки
Твёрдые сыры ; Сыр Российский 50%|Сыр Гауда 45%|Сыр Пармезан ; 200г|250г ; Ламбер|Брест-Литовск|Белебеевский ; молоко, соль, закваска
Мягкие сыры ; Сыр Моцарелла|Сыр Бри|Сыр Фета ; 125г|200г ; Unagrande|President ; молоко, соль, закваска
Овощи ; Картофель мытый|Морковь мытая|Лук репчатый|Огурцы среднеплодные|Помидоры черри ; ; Россия|Азербайджан|Узбекистан ; - ; +
Фрукты ; Яблоки Гала|Бананы|Апельсины|Груши Конференция|Мандарины|Лимоны ; ; Турция|Эквадор|Египет|Марокко ; - ; +
Зелень ; Укроп|Петрушка|Салат Айсберг|Базилик ; 50г|100г ; Зелёный сад|Агрокомбинат ; -
Вода ; Вода минеральная газированная|Вода питьевая негазированная ; 0,5л|1,5л|5л ; Святой источник|Ессентуки|Боржоми ; вода
Соки ; Сок апельсиновый|Сок яблочный|Нектар вишнёвый|Сок томатный ; 0,2л|1л|1,93л ; Добрый|Rich|J7|Сады Придонья ; -
Чай ; Чай чёрный листовой|Чай зелёный|Чай чёрный в пакетиках ; 100г|25х2г|200г ; Greenfield|Ahmad Tea|Принцесса Нури ; чай
Кофе в зёрнах ; Кофе в зёрнах Арабика|Кофе в зёрнах Эспрессо ; 250г|1кг ; Lavazza|Jardin|Paulig ; кофе натуральный жареный
Кофе молотый ; Кофе молотый для турки|Кофе молотый классический ; 250г|200г ; Жокей|Jardin|Lavazza ; кофе натуральный жареный
Шоколад ; Шоколад молочный|Шоколад горький 70%|Шоколад с фундуком ; 90г|100г|200г ; Alpen Gold|Бабаевский|Ritter Sport ; какао тёртое, сахар, какао-масло
Печенье ; Печенье сахарное|Печенье овсяное|Крекер солёный ; 200г|300г ; Юбилейное|Любятово|Посиделкино ; мука пшеничная, сахар, масло
Конфеты ; Конфеты шоколадные ассорти|Конфеты Мишка косолапый|Зефир ванильный ; 200г|250г ; Красный Октябрь|Коркунов|Шармэль ; -
Курица ; Филе куриное грудки|Бедро куриное|Крылья куриные ; ; Петелинка|Приосколье ; мясо цыплёнка-бройлера ; +
Говядина ; Фарш говяжий|Говядина вырезка|Говядина лопатка ; 400г| ; Мираторг|Праймбиф ; говядина ; +
Колбасы ; Колбаса варёная Докторская|Колбаса сырокопчёная Салями|Сосиски молочные ; 300г|400г ; Черкизово|Останкино|Вязанка ; -
Средства для стирки ; Стиральный порошок автомат|Гель для стирки ; 1,5кг|3кг|1л ; Persil|Ariel|Losk ; -
Средства для посуды ; Средство для мытья посуды|Таблетки для посудомоечной машины ; 450мл|900мл|30шт ; Fairy|AOS|Finish ; -
Пиво ; Пиво светлое фильтрованное|Пиво тёмное|Пиво пшеничное нефильтрованное ; 0,45л|0,5л|1,35л ; Жигулёвское|Балтика|Хамовники ; вода, солод, хмель
Коньяк ; Коньяк 5 лет|Коньяк 3 года|Коньяк XO ; 0,5л|0,7л ; Ной|Арарат|Старейшина ; -
Водка ; Водка|Водка особая ; 0,5л|0,7л|1л ; Белуга|Царская|Пять озёр ; -
"""
_WINE_REGIONS = (
    "Франция|Италия|Испания|Португалия|Германия|Австрия|Грузия|Армения|Россия, Кубань|"
    "Россия, Крым|Чили|Аргентина|ЮАР|Австралия|Новая Зеландия|США|Молдова|Абхазия|Венгрия|"
    "Греция|Словения|Сербия|Болгария|Румыния|Израиль|Уругвай"
).split("|")  # 26 regions x 5 styles = 130 children of "Вино"
_WINE_STYLES = "красное сухое|красное полусладкое|белое сухое|белое полусладкое|розовое сухое"
_GRAPES = {
    "красное": "Каберне Совиньон|Мерло|Саперави|Пино Нуар|Мальбек".split("|"),
    "белое": "Шардоне|Совиньон Блан|Рислинг|Ркацители|Алиготе".split("|"),
    "розовое": "Гренаш|Пино Нуар|Каберне Фран".split("|"),
}
_WINERIES = "Château Lafon|Tenuta Rossi|Фанагория|Абрау-Дюрсо|Telavi Wine Cellar".split("|")
_DESCRIPTIONS = (
    "Хит продаж в нашей сети.|Подходит для ежедневного рациона.|Произведено по ГОСТ.|"
    "Хранить в сухом прохладном месте.|Новинка сезона.|Отличный выбор для всей семьи."
).split("|")
_EPOCH_2026 = datetime(2026, 1, 1)
_IMAGE_BASE = "https://cdn.catalog-1c.example/images"  # .example: reserved, never resolvable


@dataclass(frozen=True)
class _Line:
    """A product line of one category: names are base x size x brand."""

    bases: list[str]
    sizes: list[str]
    brands: list[str]
    composition: str | None
    bulk: bool

    def name(self, index: int) -> str:
        base = self.bases[index % len(self.bases)]
        size = self.sizes[index % len(self.sizes)]
        brand = self.brands[(index // len(self.bases)) % len(self.brands)]
        return " ".join(part for part in (base, size, brand) if part)


def _parse_lines(table: str) -> dict[str, _Line]:
    lines = {}
    for row in table.strip().splitlines():
        category, bases, sizes, brands, composition, *bulk = (f.strip() for f in row.split(";"))
        lines[category] = _Line(
            bases.split("|"),
            sizes.split("|"),
            brands.split("|"),
            None if composition == "-" else composition,
            bulk == ["+"],
        )
    return lines


_LINES = _parse_lines(_LINES_TABLE)


class _Factory:
    """Deterministic record builder shared by both generators (one RNG per seed)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.ids: set[str] = set()

    def new_id(self) -> str:
        """1C-looking UUIDs: random time-low/mid, the seed's fixed node part."""
        while True:
            bits = self.rng.getrandbits(48)
            new = f"{bits >> 16:08x}-{bits & 0xFFFF:04x}-11e6-9cd7-10bf484d6226"
            if new not in self.ids:
                self.ids.add(new)
                return new

    def timestamp(self) -> str:
        return format_timestamp(_EPOCH_2026 + timedelta(seconds=self.rng.randrange(59 * 86400)))

    def category(self, parent: str, name: str) -> dict:
        return {
            "id": self.new_id(),
            "parent": parent,
            "name": name,
            "type": CATEGORY,
            "modified_at": self.timestamp(),
        }

    def optional(self, record: dict, names: tuple[str, ...], value: Any, share: float) -> None:
        """Leave fields out in ~share of records: half absent, half explicit null."""
        roll = self.rng.random()
        if roll >= share:
            record.update(dict.fromkeys(names, value) if len(names) == 1 else value)
        elif roll < share / 2:
            record.update(dict.fromkeys(names))

    def product(self, parent: str, name: str, line: _Line | None) -> dict:
        rng = self.rng
        product_id = self.new_id()
        price: float = rng.randrange(39, 2500)
        if rng.random() < 0.3:
            price += (0.5, 0.9, 0.99)[rng.randrange(3)]
        sku = f"46{rng.randrange(10**10):010d}"
        check = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(sku))
        record = {
            "id": product_id,
            "parent": parent,
            "type": PRODUCT,
            "bulk": bool(line and line.bulk),
            "name": name,
            "sku": sku + str(-check % 10),
            "price": price,
            "stock": rng.randrange(0, 200) if rng.random() > 0.1 else 0,
            "modified_at": self.timestamp(),
        }
        self.optional(record, ("description",), f"{name}. {rng.choice(_DESCRIPTIONS)}", 0.2)
        if line and line.composition:
            self.optional(record, ("composition",), line.composition, 0.15)
        proteins, fats, carbs = (round(rng.random() * m, 1) for m in (20, 30, 80))
        kcal = round(proteins * 4 + fats * 9 + carbs * 4)
        nutrition = f"Б: {proteins}, Ж: {fats}, У: {carbs}, Ккал: {kcal}".replace(".", ",")
        self.optional(record, ("nutrition",), nutrition, 0.25)
        image = {
            "image_url": f"{_IMAGE_BASE}/{product_id}.jpg",
            "image_hash": f"{rng.getrandbits(160):040x}",
        }
        self.optional(record, ("image_url", "image_hash"), image, 0.15)
        return record


def _parse_tree(text: str) -> list[tuple[int, str]]:
    """(level, name) rows of an indented outline, level 1 = root."""
    rows = [row for row in text.splitlines() if row.strip()]
    return [((len(row) - len(row.lstrip())) // 2 + 1, row.strip()) for row in rows]


def demo_catalog(seed: int = 0, products_per_line: int = 11) -> Catalog:
    """A realistic Russian retail catalog (~650 products, 180 categories) for demos and tests:
    7 levels under "Бакалея", 130 children under "Вино", some products without image,
    description, composition or nutrition, prices with and without kopecks."""
    factory, records = _Factory(seed), []
    path = [ROOT_PARENT]  # ids from the root down to the last category seen
    for level, name in _parse_tree(_TREE):
        del path[level:]
        category = factory.category(path[-1], name)
        records.append(category)
        path.append(category["id"])
        line = _LINES.get(name)
        for index in range(products_per_line if line else 0):
            records.append(factory.product(category["id"], line.name(index), line))
        if name == "Вино":
            records += _wines(factory, category["id"])
    catalog = Catalog()
    catalog._load(records)
    return catalog


def _wines(factory: _Factory, wine_id: str) -> list[dict]:
    records = []
    for region in _WINE_REGIONS:
        for style in _WINE_STYLES.split("|"):
            records.append(factory.category(wine_id, f"Вино {region}, {style}"))
            region_id = records[-1]["id"]
            for _ in range(2):
                grape = factory.rng.choice(_GRAPES[style.split()[0]])
                name = f"Вино {grape} {style} 0,75л {factory.rng.choice(_WINERIES)}"
                records.append(factory.product(region_id, name, None))
    return records


def synthetic_catalog(
    n_products: int,
    n_categories: int,
    depth: int = 6,
    wide_parent_children: int = 500,
    seed: int = 0,
) -> Catalog:
    """A large catalog for benchmarks: a ``depth``-level chain, one very wide parent, and the
    remaining categories attached at random without exceeding ``depth``. The wide parent gets
    fewer children if ``n_categories`` is too small for both shapes.
    """
    if depth < 2:
        raise ValueError("depth must be >= 2")
    factory, records = _Factory(seed), []
    levels: list[tuple[str, int]] = []  # (category id, level) of possible parents
    parent = ROOT_PARENT
    for level in range(1, min(depth, n_categories) + 1):
        records.append(factory.category(parent, f"Уровень {level}"))
        parent = records[-1]["id"]
        levels.append((parent, level))
    wide_children = max(0, min(wide_parent_children, n_categories - len(records) - 1))
    if len(records) < n_categories:
        records.append(factory.category(ROOT_PARENT, "Широкая категория"))
        wide = records[-1]["id"]
        levels.append((wide, 1))
        for number in range(wide_children):
            records.append(factory.category(wide, f"Подкатегория {number + 1}"))
            levels.append((records[-1]["id"], 2))
    names = list(_LINES)
    while len(records) < n_categories:
        parent, level = levels[factory.rng.randrange(len(levels))]
        if level < depth:
            name = f"{factory.rng.choice(names)} {len(records)}"
            records.append(factory.category(parent, name))
            levels.append((records[-1]["id"], level + 1))
    category_ids = [record["id"] for record in records] or [ROOT_PARENT]
    lines = list(_LINES.values())
    for number in range(n_products):
        line = lines[factory.rng.randrange(len(lines))]
        parent = category_ids[factory.rng.randrange(len(category_ids))]
        records.append(factory.product(parent, line.name(number), line))
    catalog = Catalog()
    catalog._load(records)
    return catalog
