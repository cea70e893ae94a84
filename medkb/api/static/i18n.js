// The console's words in English and Chinese; t(key, vars) picks the current language.
const STRINGS = {
  en: {
    skip: "Skip to the question", console: "clinician console", language: "Language", signOut: "Sign out",
    signInTitle: "Sign in", apiKey: "API key", signIn: "Sign in",
    signInHelp: "Paste your medkb API key. It is kept only in this browser tab and is forgotten when the tab closes.",
    badKey: "This API key was not accepted (wrong, revoked or mistyped). Check it and try again.",
    noServer: "The medkb server could not be reached.",
    whoami: "Tenant {tenant} · role {role}",
    patients: "Patient 360", pid: "Pseudonymous id", sex: "Sex", any: "any", female: "female", male: "male",
    bornFrom: "Born from", bornTo: "to", condition: "Condition (code or words)", search: "Search",
    searching: "Searching…", found: "{n} patient(s) found.", foundMore: "{n} shown; refine the search to see others.",
    noPatients: "No patient of your tenant matches.", patientRole: "Patient data needs the clinician or admin role.",
    born: "born {year}", deceased: "deceased", select: "Select", selected: "Selected",
    demographics: "Demographics", birthYear: "Birth year", sexLabel: "Sex", conditionsN: "{n} conditions",
    medicationsN: "{n} medications", safety: "Safety notes", noSafety: "No safety notes from the knowledge graph.",
    timeline: "Timeline", noEvents: "No events in the record.", allKinds: "all", kindFilter: "Show",
    encounter: "encounter", condition_k: "condition", medication: "medication", procedure: "procedure",
    observation: "observation", allergy: "allergy", ongoing: "ongoing", until: "until {d}",
    source: "Source", release: "release", severity: "severity", clearPatient: "Clear patient",
    ask: "Ask", question: "Question", askBtn: "Ask", askHint: "Enter asks; Shift+Enter starts a new line.",
    scopeNone: "Questions are answered from the knowledge base (no patient selected).",
    scopePatient: "Questions are scoped to patient {id}.",
    you: "You", medkb: "medkb", streaming: "Answering…", stopped: "The answer stream failed: {msg}",
    modeEvidence: "Evidence mode — no answer was generated (no language model is configured). Quotations only.",
    modeNoEvidence: "No evidence — the knowledge base has nothing on this question, so no answer is given.",
    modeLlm: "Generated answer — every sentence checked against its citations.",
    unsupported: "unsupported", unsupportedTitle: "The cited evidence does not support this sentence.",
    citations: "Citations", citeLabel: "Open citation {n}", safetyAnswer: "Safety notes for this question",
    details: "Evidence", close: "Close", tabSource: "Source", tabWhy: "Why this evidence", tabGraph: "Graph",
    sourceEmpty: "Open a citation [n] to read its source.",
    whyEmpty: "Ask a question to see why each passage was retrieved.",
    graphEmpty: "Choose an entity to see its neighbours.",
    title: "Title", section: "Section", page: "Page", version: "Version", date: "Date", docType: "Type",
    citedBy: "Cited by this sentence of the answer", superseded: "superseded",
    patientFact: "A fact from the patient's own record", loading: "Loading…",
    linked: "Entities in the question", noLinked: "No entity of the question was recognised.",
    hits: "Retrieved passages", generators: "Found by", rank: "rank", score: "score", fused: "fused score",
    graphPath: "graph path", relevance: "relevance", cited: "cited as [{n}]", notCited: "not cited", belowGate: "not cited: below the evidence gate",
    neighbours: "{n} neighbour(s)", codes: "Codes", provenance: "provenance", back: "Back",
    synthetic: "synthetic vocabulary — not clinical knowledge", noNeighbours: "No neighbours.",
    error: "Error: {msg}", notFound: "Not found.",
    role_clinician: "clinician", role_admin: "admin", role_curator: "curator", role_researcher: "researcher", sex_male: "male", sex_female: "female",
    sex_other: "other", sex_unknown: "unknown",
  },
  zh: {
    skip: "跳到提问", console: "临床医生控制台", language: "语言", signOut: "退出",
    signInTitle: "登录", apiKey: "API 密钥", signIn: "登录",
    signInHelp: "粘贴您的 medkb API 密钥。密钥只保存在此浏览器标签页中，关闭标签页即清除。",
    badKey: "此 API 密钥未被接受（错误、已吊销或输入有误）。请检查后重试。",
    noServer: "无法连接 medkb 服务器。",
    whoami: "租户 {tenant} · 角色 {role}",
    patients: "患者全息视图", pid: "假名化患者 ID", sex: "性别", any: "不限", female: "女", male: "男",
    bornFrom: "出生年份自", bornTo: "至", condition: "疾病（编码或名称）", search: "搜索",
    searching: "正在搜索…", found: "找到 {n} 位患者。", foundMore: "显示 {n} 位；请缩小搜索范围查看其他患者。",
    noPatients: "本租户中没有符合条件的患者。", patientRole: "患者数据需要临床医生或管理员角色。",
    born: "{year} 年生", deceased: "已故", select: "选择", selected: "已选择",
    demographics: "基本信息", birthYear: "出生年份", sexLabel: "性别", conditionsN: "{n} 项疾病",
    medicationsN: "{n} 项用药", safety: "安全提示", noSafety: "知识图谱中没有安全提示。",
    timeline: "时间线", noEvents: "记录中没有事件。", allKinds: "全部", kindFilter: "显示",
    encounter: "就诊", condition_k: "疾病", medication: "用药", procedure: "操作", observation: "检查观察",
    allergy: "过敏", ongoing: "持续中", until: "至 {d}",
    source: "来源", release: "版本", severity: "严重程度", clearPatient: "取消选择患者",
    ask: "提问", question: "问题", askBtn: "提问", askHint: "回车提问；Shift+回车换行。",
    scopeNone: "根据知识库回答（未选择患者）。", scopePatient: "问题限定于患者 {id}。",
    you: "您", medkb: "medkb", streaming: "正在回答…", stopped: "回答流中断：{msg}",
    modeEvidence: "证据模式——未生成回答（未配置语言模型），仅为原文摘录。",
    modeNoEvidence: "无证据——知识库中没有与此问题相关的内容，因此不作回答。",
    modeLlm: "生成的回答——每句话均已对照其引用核查。",
    unsupported: "无支持", unsupportedTitle: "所引证据不支持这句话。",
    citations: "引用", citeLabel: "打开引用 {n}", safetyAnswer: "与此问题相关的安全提示",
    details: "证据", close: "关闭", tabSource: "来源", tabWhy: "为何是这些证据", tabGraph: "图谱",
    sourceEmpty: "点击引用 [n] 查看其来源。", whyEmpty: "提问后可查看每段证据被检索到的原因。",
    graphEmpty: "选择一个实体查看其相邻实体。",
    title: "标题", section: "章节", page: "页", version: "版本", date: "日期", docType: "类型",
    citedBy: "引用它的回答句子", superseded: "已被取代",
    patientFact: "来自患者本人记录的事实", loading: "正在加载…",
    linked: "问题中的实体", noLinked: "问题中没有识别出实体。",
    hits: "检索到的段落", generators: "检索器", rank: "排名", score: "得分", fused: "融合得分",
    graphPath: "图谱路径", relevance: "相关度", cited: "引用为 [{n}]", notCited: "未引用", belowGate: "未引用：低于证据阈值",
    neighbours: "{n} 个相邻实体", codes: "编码", provenance: "出处", back: "返回",
    synthetic: "合成词表——不是临床知识", noNeighbours: "没有相邻实体。",
    error: "错误：{msg}", notFound: "未找到。",
    role_clinician: "临床医生", role_admin: "管理员", role_curator: "知识管理员", role_researcher: "研究人员", sex_male: "男", sex_female: "女",
    sex_other: "其他", sex_unknown: "未知",
    kind_interaction: "相互作用", kind_contraindication: "禁忌", kind_caution: "慎用", kind_adverse_reaction: "不良反应",
    sev_contraindicated: "禁忌", sev_avoid: "避免合用", sev_precaution: "慎用", sev_consider: "需考虑",
  },
};

let current = "en";

export function setLang(lang) {
  current = STRINGS[lang] ? lang : "en";
  document.documentElement.lang = current === "zh" ? "zh-CN" : "en";
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  return current;
}

export function lang() {
  return current;
}

export function browserLang() {
  return /^zh\b/i.test((navigator.languages && navigator.languages[0]) || navigator.language || "en") ? "zh" : "en";
}

// A stored value (role, sex) in the current language, or the value itself when it has no translation.
export function tv(prefix, value) {
  const key = `${prefix}_${value}`;
  return STRINGS[current][key] ?? value ?? "";
}

export function t(key, vars = {}) {
  const s = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (vars[k] ?? ""));
}
