"""The console's words, Japanese first and English: chosen by a ``lang`` cookie (the switch in
the page header), else by the browser's ``Accept-Language``, else Japanese."""

from __future__ import annotations

LANGS = ("ja", "en")

# key: (Japanese, English)
MESSAGES: dict[str, tuple[str, str]] = {
    "title": ("着信スクリーニング", "Call screening"),
    "dashboard": ("ダッシュボード", "Dashboard"),
    "calls": ("着信履歴", "Calls"),
    "lists": ("許可・拒否リスト", "Lists"),
    "voicemail": ("留守番電話", "Voicemail"),
    "audit": ("操作履歴", "Audit log"),
    "login": ("ログイン", "Log in"),
    "logout": ("ログアウト", "Log out"),
    "user": ("ユーザー名", "User name"),
    "password": ("パスワード", "Password"),
    "login_failed": ("ユーザー名またはパスワードが違います", "Wrong user name or password"),
    "login_wait": (
        "試行回数が多すぎます。しばらく待ってください",
        "Too many attempts; wait a while",
    ),
    "today": ("今日", "Today"),
    "week": ("過去7日間", "Last 7 days"),
    "by_route": ("経路別", "By route"),
    "screened_away": ("スタッフに回さなかった割合", "Screened away from staff"),
    "pass_rate": ("認証の通過率", "Challenge pass rate"),
    "per_day": ("30日間の日別着信", "Calls per day, 30 days"),
    "top_blocked": ("拒否の多い番号", "Top blocked numbers"),
    "top_challenged": ("認証の多い番号", "Top challenged numbers"),
    "last_call": ("最後の着信", "Last call"),
    "agent": ("エージェント", "Agent"),
    "agent_connected": ("Asterisk に接続中", "connected to Asterisk"),
    "agent_disconnected": (
        "動作中ですが Asterisk に接続していません",
        "running, but not connected to Asterisk",
    ),
    "agent_stale": (
        "最近の報告がありません（停止した可能性があります）",
        "no recent report (it may have stopped)",
    ),
    "agent_not_running": ("動作していません", "not running"),
    "agent_reported": ("最後の報告", "Last report"),
    "time": ("時刻", "Time"),
    "caller": ("発信者", "Caller"),
    "name": ("名前", "Name"),
    "category": ("種別", "Category"),
    "route": ("経路", "Route"),
    "outcome": ("結果", "Outcome"),
    "reasons": ("理由", "Reasons"),
    "actions": ("操作", "Actions"),
    "block": ("拒否", "Block"),
    "allow": ("許可", "Allow"),
    "forget": ("リストから外す", "Forget"),
    "confirm_block": ("この番号を拒否しますか？", "Block this number?"),
    "confirm_allow": ("この番号を許可しますか？", "Allow this number?"),
    "confirm_forget": ("この番号をリストから外しますか？", "Take this number off the lists?"),
    "confirm_remove": ("このエントリを削除しますか？", "Remove this entry?"),
    "confirm_delete": ("このメッセージを削除しますか？", "Delete this message?"),
    "filter": ("絞り込み", "Filter"),
    "number": ("番号", "Number"),
    "date": ("日付", "Date"),
    "any": ("すべて", "any"),
    "older": ("さらに古い着信", "Older calls"),
    "newest": ("最新へ", "Newest"),
    "live": ("ライブ更新中", "Live"),
    "no_calls": ("着信はありません", "No calls"),
    "site": ("拠点", "Site"),
    "all_sites": ("全拠点", "all sites"),
    "central_down": (
        "共有データベースに接続できないため、この拠点の着信のみ表示しています",
        "The shared database is unreachable: showing this site's calls only",
    ),
    "check": ("判定の説明", "Check: where a call would go"),
    "entries": ("リストのエントリ", "List entries"),
    "no_entries": ("エントリはありません", "No entries"),
    "kind": ("リスト", "List"),
    "prefix": ("前方一致", "Prefix"),
    "label": ("ラベル", "Label"),
    "note": ("メモ", "Note"),
    "source": ("登録元", "Source"),
    "expires": ("有効期限", "Expires"),
    "hits": ("件数", "Hits"),
    "last_seen": ("最終着信", "Last seen"),
    "search": ("検索", "Search"),
    "add": ("追加", "Add"),
    "save": ("保存", "Save"),
    "remove": ("削除", "Remove"),
    "import": ("CSV取り込み", "Import CSV"),
    "export": ("CSV書き出し", "Export CSV"),
    "import_help": (
        "全行が正しい場合のみ取り込みます（一行でも誤りがあれば何も変更しません）",
        "All or nothing: one bad row and nothing is imported",
    ),
    "file": ("ファイル", "File"),
    "heard": ("再生済み", "Heard"),
    "mark_heard": ("再生済みにする", "Mark heard"),
    "delete": ("削除", "Delete"),
    "duration": ("長さ", "Duration"),
    "no_voicemail": ("メッセージはありません", "No messages"),
    "voicemail_off": (
        "留守番電話のフォルダが設定されていません（SCREENER_VOICEMAIL_DIR）",
        "No voicemail folder configured (SCREENER_VOICEMAIL_DIR)",
    ),
    "done": ("完了しました", "Done"),
    "error": ("エラー", "Error"),
    "who": ("ユーザー", "Who"),
    "what": ("操作", "What"),
    "target": ("対象", "Target"),
    "detail": ("詳細", "Detail"),
    "call_detail": ("番号の詳細", "Number detail"),
    "anonymous": ("非通知", "(no number)"),
}


def pick(cookie: str | None, accept_language: str | None) -> str:
    """The page language: the cookie's if valid, else the best of Accept-Language, else ja."""
    if cookie in LANGS:
        return str(cookie)
    best, best_q = "ja", -1.0
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        lang = tag.strip().lower().split("-")[0]
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if lang in LANGS and q > best_q:
            best, best_q = lang, q
    return best


def translator(lang: str) -> dict[str, str]:
    """Key → text in ``lang``."""
    index = LANGS.index(lang) if lang in LANGS else 0
    return {key: pair[index] for key, pair in MESSAGES.items()}
